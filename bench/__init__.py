"""The conv_ext benchmark harness (run it as `python -m bench`, `python -m
conv_ext.bench`, `python bench/run.py` or `make bench`).

    cases.py      layer descriptions and the named suites (public layer lists)
    per_layer.py  one layer and pass: tensors, conv_ext vs the torch baselines, check
    timing.py     interleaved timing (CPU rounds, CUDA graph replay), measured peak
    gpu_info.py   GPU kernel names of a call, register counts of conv_ext's kernels
    models.py     whole-model mode (torchvision architectures, random weights)
    report.py     per-suite summaries, table, JSON, PNG, progress line
    cli.py        the command line
    sass_check.py the static SASS table of the CUDA kernels (no GPU needed; `make sass`)
    run.py        `make bench`'s entry; gpu_check.sh: build, GPU tests, GPU benchmark
    conv_variants.py  transposed (U-Net decoder) and 1-D (depthwise causal) suites
"""
