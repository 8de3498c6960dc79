"""Runnable examples: python -m conv_ext.examples.<name> --help"""
