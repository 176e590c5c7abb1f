"""The baseline of `vaelab bench`: the official PyTorch VAE example (pytorch/examples, vae/main.py),
run as its users run it: a Dataset that turns each image into a PIL image and then a tensor
(what torchvision's MNIST + ToTensor do), torch.utils.data.DataLoader, batch 128, Adam 1e-3,
BCE on grayscale pixels with reduction="sum". torchvision is not needed: its two steps are
written out below. Runs in its own process:

    python benchmarks/recipe.py IMAGES.gz LABELS.gz TEST_IMAGES.gz EPOCHS SEED

and prints one JSON line: training images/s (training loop only), the test loss per image.
"""

from __future__ import annotations

import gzip
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset


def read_images(path: str) -> np.ndarray:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


class ImageFolderLike(Dataset):
    """torchvision.datasets.MNIST's __getitem__ with transforms.ToTensor()."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(images.copy())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i].numpy(), mode="L")
        tensor = torch.from_numpy(np.array(img, np.uint8, copy=True)).float().div(255)
        return tensor.unsqueeze(0), 0


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def main(argv: list[str]) -> None:
    train_path, _, test_path, epochs, seed = argv
    torch.manual_seed(int(seed))
    train_loader = DataLoader(ImageFolderLike(read_images(train_path)), batch_size=128,
                              shuffle=True)  # fmt: skip
    test_loader = DataLoader(ImageFolderLike(read_images(test_path)), batch_size=128)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, seconds = 0, 0.0
    for epoch in range(1, int(epochs) + 1):
        model.train()
        train_loss, start = 0.0, time.perf_counter()
        for batch_idx, (data, _) in enumerate(train_loader):
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_function(recon, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            seen += len(data)
            if batch_idx % 10 == 0:  # the example's log_interval, to stderr here
                print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/"
                      f"{len(train_loader.dataset)}]\tLoss: {loss.item() / len(data):.6f}",
                      file=sys.stderr)  # fmt: skip
        seconds += time.perf_counter() - start
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in test_loader:
            recon, mu, logvar = model(data)
            test_loss += loss_function(recon, data, mu, logvar).item()
    print(json.dumps({"images_per_s": seen / seconds,
                      "test_loss": test_loss / len(test_loader.dataset)}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
