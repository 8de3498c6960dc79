"""Importing conv_ext on its own, in a fresh interpreter, works."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_alone_in_fresh_process():
    # `import conv_ext` as the very first import: the extension must load
    # torch's libraries itself. No GPU needed.
    code = ("import conv_ext, torch; "
            "y = conv_ext.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)); "
            "assert y.shape == (1, 3, 3, 3); print(conv_ext.built_with_cuda())")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("True", "False")
