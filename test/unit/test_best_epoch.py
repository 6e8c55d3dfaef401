"""BestEpoch keeps the weights of the best held-out epoch and logs progress with an ETA."""

import torch

from dexndm.best_epoch import BestEpoch


def test_restores_the_best_epoch_and_logs():
    net = torch.nn.Linear(2, 1)
    lines = []
    best = BestEpoch(net, 3, tag="t", log=lines.append)
    snapshots = []
    for ep, val in enumerate([0.5, 0.2, 0.9]):
        with torch.no_grad():
            net.weight.fill_(float(ep))
        snapshots.append(net.weight.clone())
        best.end_epoch(ep, val, f"val {val}")
    assert best.loss == 0.2
    assert torch.equal(best.restore().weight, snapshots[1]) and not net.training
    assert lines[0].startswith("[t] epoch 1/3 val 0.5 ETA") and lines[-1].endswith("ETA 0.0 min")


def test_starting_weights_win_when_no_epoch_improves():
    net = torch.nn.Linear(2, 1)
    start = net.weight.clone()
    best = BestEpoch(net, 1, initial=0.1, log=lambda _: None)
    with torch.no_grad():
        net.weight.add_(1.0)
    best.end_epoch(0, 0.3, "")
    assert torch.equal(best.restore().weight, start)
