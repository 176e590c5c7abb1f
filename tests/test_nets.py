import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.nets import GatedDense, build_decoder, build_encoder, vector_net


@pytest.mark.parametrize("net", ["mlp", "gated", "conv"])
@pytest.mark.parametrize(  # grayscale or RGB at 28, 32 and 64 pixels (image folders)
    "shape", [(1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32), (1, 64, 64), (3, 64, 64)]
)
@pytest.mark.parametrize("cond,film", [(0, False), (10, False), (10, True)])
def test_shapes_with_leading_sample_dims(net, shape, cond, film):
    enc = build_encoder(net, shape, out_dim=8, hidden=(64, 32), cond_dim=cond, film=film)
    dec = build_decoder(net, shape, latent_dim=4, hidden=(64, 32), cond_dim=cond, film=film)
    c = torch.eye(10)[torch.arange(5) % 10] if cond else None
    assert enc(torch.rand(5, *shape), c).shape == (5, 8)
    assert dec(torch.randn(5, 4), c).shape == (5, *shape)
    out = dec(torch.randn(3, 5, 4), c)  # (K, B, D) importance samples
    assert out.shape == (3, 5, *shape)


def test_mlp_default_is_the_pytorch_example():
    enc = build_encoder("mlp", (1, 28, 28), out_dim=40)
    sizes = [
        (m.in_features, m.out_features) for m in enc.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert sizes == [(784, 400), (400, 40)]


def test_conv_is_the_tensorflow_tutorial():
    enc = build_encoder("conv", (1, 28, 28), out_dim=4)
    dec = build_decoder("conv", (1, 28, 28), latent_dim=2)
    convs = [m.out_channels for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m.out_channels for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs == [32, 64] and deconvs == [64, 32, 1]
    assert dec.dense[0].out_features == 7 * 7 * 32


def test_condition_changes_the_output():
    torch.manual_seed(0)
    dec = build_decoder("mlp", (1, 4, 4), latent_dim=2, hidden=(8,), cond_dim=3)
    z = torch.zeros(1, 2)
    a, b = dec(z, torch.tensor([[1.0, 0, 0]])), dec(z, torch.tensor([[0, 1.0, 0]]))
    assert not torch.allclose(a, b)


def test_bad_net_and_shape():
    with pytest.raises(VaelabError, match="unknown net 'resnet'"):
        build_encoder("resnet", (1, 28, 28), 4)
    with pytest.raises(VaelabError, match="divisible by 4"):
        build_decoder("conv", (1, 30, 30), 2)


def test_tanh_activation_for_the_iwae_paper_nets():
    enc = build_encoder("mlp", (1, 28, 28), out_dim=100, hidden=(200, 200), activation="tanh")
    kinds = [type(m).__name__ for m in enc.net]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]


def test_gated_layers_are_value_times_sigmoid_gate_and_train_both_halves():
    torch.manual_seed(0)
    enc = build_encoder("gated", (1, 28, 28), out_dim=80, hidden=(300, 300))
    kinds = [type(m).__name__ for m in enc.net]
    assert kinds == ["GatedDense", "GatedDense", "Linear"]  # the VampPrior codebase's 300-300
    layer = enc.net[0]
    x = torch.rand(4, 784)
    w, b = layer.linear.weight, layer.linear.bias
    value, gate = x @ w[:300].T + b[:300], x @ w[300:].T + b[300:]
    torch.testing.assert_close(layer(x), value * torch.sigmoid(gate))
    enc(torch.rand(4, 1, 28, 28)).pow(2).sum().backward()
    assert w.grad[:300].abs().sum() > 0 and w.grad[300:].abs().sum() > 0


def perturb_films(module: torch.nn.Module) -> None:
    for film in module.films:
        torch.nn.init.normal_(film.linear.weight, std=0.5)
        torch.nn.init.normal_(film.linear.bias, std=0.5)


@pytest.mark.parametrize("net", ["mlp", "gated", "conv"])
def test_film_starts_as_the_identity_and_then_uses_the_label(net):
    shape, c = (1, 28, 28), torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    x, z = torch.rand(4, *shape), torch.randn(4, 2)
    nets = {}
    for film in (False, True):
        torch.manual_seed(0)  # the same draws for the shared layers; FiLM's come after them
        enc = build_encoder(net, shape, 6, hidden=(16,), cond_dim=3, film=film)
        torch.manual_seed(1)
        nets[film] = (enc, build_decoder(net, shape, 2, hidden=(16,), cond_dim=3, film=film))
    (enc0, dec0), (enc1, dec1) = nets[False], nets[True]
    torch.testing.assert_close(enc1(x, c), enc0(x, c))
    torch.testing.assert_close(dec1(z, c), dec0(z, c))
    perturb_films(enc1)
    perturb_films(dec1)
    assert not torch.allclose(enc1(x, c), enc0(x, c))
    # Rows 0 and 3 share the label: FiLM moves them alike, so only z tells them apart.
    same_z = z[[0, 0, 0, 0]]
    out = dec1(same_z, c)
    torch.testing.assert_close(out[0], out[3])
    assert not torch.allclose(out[0], out[1])
    # (K, B, D) samples with a (B, cond) label: each k as its own batch.
    zk = torch.randn(3, 4, 2)
    torch.testing.assert_close(dec1(zk, c)[2], dec1(zk[2], c))


def test_film_is_a_scale_and_shift_of_the_hidden_units():
    torch.manual_seed(0)
    dec = build_decoder("mlp", (1, 2, 2), latent_dim=2, hidden=(5,), cond_dim=2, film=True)
    gamma, beta = torch.arange(5.0) / 5, torch.linspace(-1, 1, 5)
    with torch.no_grad():  # label 1 -> gamma, beta; label 0 -> identity
        dec.films[0].linear.weight.zero_()
        dec.films[0].linear.weight[:, 1] = torch.cat([gamma, beta])
    z, c = torch.randn(1, 2), torch.tensor([[0.0, 1.0]])
    first, _, last = dec.net
    h = torch.relu(first(torch.cat([z, c], dim=-1)))
    expected = last(h * (1 + gamma) + beta).view(1, 1, 2, 2)
    torch.testing.assert_close(dec(z, c), expected)


def test_film_needs_a_condition():
    with pytest.raises(VaelabError, match="FiLM conditioning needs a condition"):
        build_decoder("mlp", (1, 28, 28), 2, film=True)


def test_vector_nets_follow_the_net_and_end_linear():
    gated, plain = vector_net("gated", [4, 8, 6]), vector_net("conv", [4, 8, 6], "tanh")
    assert [type(m) for m in gated] == [GatedDense, torch.nn.Linear]
    assert [type(m) for m in plain] == [torch.nn.Linear, torch.nn.Tanh, torch.nn.Linear]
    assert gated(torch.randn(3, 5, 4)).shape == (3, 5, 6)  # leading sample dims pass through
    with pytest.raises(VaelabError, match="unknown net 'rnn'"):
        vector_net("rnn", [4, 6])
