"""A training script of one's own, measured by dist_sqz's meter (docs/meter.md).

Everything here is the user's: the model (torchvision's MobileNet V3 small, BatchNorm and
all), the data, the loop. The meter is four lines, marked `# meter`. Run it with

    torchrun --nproc-per-node 2 examples/meter_train.py --out runs/mine
    torchrun --nproc-per-node 2 examples/meter_train.py --out runs/psgd --powersgd
    horovodrun -np 2 python examples/meter_train.py --out runs/hvd --horovod

then `dist-sqz report runs/mine` (or `dist-sqz compare --collect` of several such runs).
"""

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP

import dist_sqz

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", required=True, help="the run folder the meter writes")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--image-size", type=int, default=64)
parser.add_argument("--horovod", action="store_true", help="Horovod instead of DDP")
parser.add_argument("--powersgd", action="store_true", help="DDP with torch's PowerSGD hook")


def train(args) -> None:
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    meter = dist_sqz.Meter(args.out, model="mobilenet_v3_small")  # meter
    if args.horovod:
        import horovod.torch as hvd

        rank = hvd.rank()
        hvd.broadcast_parameters(net.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=net.named_parameters())
        model = net
        meter.watch(optimizer, model=net)  # meter
    else:
        rank = dist.get_rank()
        if args.powersgd:
            from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

            # One bucket: torch's hook issues each bucket's second all-reduce from a
            # callback, and over gloo two buckets' callbacks can reach the wire in a
            # different order on each rank (gloo: "collective mismatch"). A cap over the
            # model's size avoids it.
            model = DDP(net, bucket_cap_mb=64)
            state = psgd.PowerSGDState(None, matrix_approximation_rank=2, start_powerSGD_iter=2)
            model.register_comm_hook(state, psgd.powerSGD_hook)
        else:
            model = DDP(net)
        meter.watch(model)  # meter

    data = torch.Generator().manual_seed(1 + rank)
    for step in range(args.steps):
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=data)
        y = torch.randint(0, 1000, (args.batch_size,), generator=data)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        meter.step(loss)  # meter
        if rank == 0 and (step + 1) % 10 == 0:
            print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
    meter.close()  # meter


if __name__ == "__main__":
    args = parser.parse_args()
    if args.horovod:
        import horovod.torch as hvd

        hvd.init()
        train(args)
        hvd.shutdown()
    else:
        dist.init_process_group("gloo")
        train(args)
        # The model (which holds the process group) is gone with train()'s frame: gloo's
        # threads end here, while Python is whole, not during its exit (pytorch#190489).
        dist.destroy_process_group()
