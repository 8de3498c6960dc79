"""Train LeNet-5 (LeCun et al., 1998) on scikit-learn's bundled handwritten
digits twice from the same seed, once with nn.Conv2d and once with
conv_ext.Conv2d, and check that the two training curves agree.

    pip install scikit-learn matplotlib      # the 'examples' extra; no download
    python -m conv_ext.examples.lenet --epochs 10 --out lenet.png

The 1,797 8x8 digit images are upsampled (bilinear) to LeNet's 32x32 input;
80% train, 20% test. Prints per-epoch training loss and test accuracy of
both models, saves a PNG of the curves, and exits with status 1 if the
curves disagree beyond float32 tolerance (the two only differ in the order
of floating-point sums inside the convolutions).
"""
import argparse
import copy
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext

# Agreement thresholds: the project's float32 tolerance. Rounding differences
# (~1e-7 relative per conv) grow slowly through training (measured: 7.5e-8 in
# the loss after 10 epochs). One test image may flip if it sits on a
# decision boundary.
LOSS_RTOL = 1e-4
LOSS_ATOL = 1e-5
MAX_ACCURACY_DIFFERENCE = 1   # test images


class LeNet5(nn.Module):
    """LeNet-5: C1 6@5x5, S2 avg-pool, C3 16@5x5, S4, C5 120@5x5, F6 84, 10
    outputs; tanh activations as in the paper (C3 fully connected)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(16, 120, 5), nn.Tanh())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), nn.Tanh(),
                                        nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def load_digits(seed):
    """(train_x, train_y, test_x, test_y): N x 1 x 32 x 32 float32 in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install scikit-learn "
                 "(or pip install 'conv_ext[examples]')")
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(labels))
    train, test = order[:n_train], order[n_train:]
    return images[train], labels[train], images[test], labels[test]


def train(model, data, epochs, batch_size, lr, seed):
    """Per-epoch (mean training loss, test accuracy) of `model`."""
    train_x, train_y, test_x, test_y = data
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    shuffle = torch.Generator().manual_seed(seed)   # same batches for both models
    curve = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in torch.randperm(len(train_y), generator=shuffle).split(batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        model.eval()
        with torch.no_grad():
            correct = (model(test_x).argmax(1) == test_y).sum().item()
        curve.append((total / count, correct / len(test_y)))
    return curve


def curves_agree(a, b, n_test):
    """Whether two curves of (loss, accuracy) agree within float32 tolerance;
    also returns the largest loss and accuracy differences."""
    loss_diff = max(abs(x[0] - y[0]) for x, y in zip(a, b))
    acc_diff = max(abs(x[1] - y[1]) for x, y in zip(a, b))
    losses_ok = all(math.isclose(x[0], y[0], rel_tol=LOSS_RTOL, abs_tol=LOSS_ATOL)
                    for x, y in zip(a, b))
    accuracy_ok = round(acc_diff * n_test) <= MAX_ACCURACY_DIFFERENCE
    return len(a) == len(b) and losses_ok and accuracy_ok, loss_diff, acc_diff


def plot(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, curve), style in zip(curves.items(), ("-o", "--x")):
        epochs = range(1, len(curve) + 1)
        ax_loss.plot(epochs, [c[0] for c in curve], style, label=name)
        ax_acc.plot(epochs, [100 * c[1] for c in curve], style, label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="LeNet-5 on digits")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="same seed, same batches")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lenet.png", help="PNG of the two curves")
    args = parser.parse_args(argv)

    data = load_digits(args.seed)
    torch.manual_seed(args.seed)
    reference = LeNet5()
    models = {"nn.Conv2d": reference, "conv_ext.Conv2d": conv_ext.convert(copy.deepcopy(reference))}
    curves, seconds = {}, {}
    for name, model in models.items():
        start = time.perf_counter()
        curves[name] = train(model, data, args.epochs, args.batch_size, args.lr, args.seed)
        seconds[name] = time.perf_counter() - start

    a, b = curves.values()
    print(f"LeNet-5, {len(data[1])} train / {len(data[3])} test digits, {args.epochs} epochs")
    print(f"{'epoch':>5}  {'loss nn':>10}  {'loss conv_ext':>13}  {'acc nn':>7}  {'acc conv_ext':>12}")
    for epoch, (x, y) in enumerate(zip(a, b), 1):
        print(f"{epoch:>5}  {x[0]:>10.6f}  {y[0]:>13.6f}  {100 * x[1]:>6.2f}%  {100 * y[1]:>11.2f}%")
    print("training time: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()))
    plot(curves, args.out)
    print(f"curves saved to {args.out}")
    ok, loss_diff, acc_diff = curves_agree(a, b, len(data[3]))
    print(f"largest difference: loss {loss_diff:.2e}, accuracy {100 * acc_diff:.2f} points")
    if not ok:
        print("FAIL: the curves disagree beyond float32 tolerance", file=sys.stderr)
        return 1
    print("OK: the curves agree within float32 tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
