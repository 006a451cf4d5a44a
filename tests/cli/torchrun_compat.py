#!/usr/bin/env python3
"""torchrun for Debian 12's python3-torch (torch 1.13 under Python 3.11).

That pairing's torchrun stops before starting any worker with "AttributeError: 'NoneType' object
has no attribute 'get'": its Std.from_str looks a number up by iterating an IntFlag, and Python
3.11 no longer yields the zero flag (nor multi-bit ones) when iterating, so "0" (the default of
--redirects and --tee) maps to None. This script is torchrun with that lookup done by value.
Same arguments as torchrun.
"""
import re
import sys

from torch.distributed.elastic.multiprocessing import api


def from_str(vm):
    if re.fullmatch(r"[0-3]", vm):
        return api.Std(int(vm))
    if re.fullmatch(r"(\d:[0-3],)*\d:[0-3]", vm):
        return {int(i): api.Std(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
    raise ValueError(f"{vm} is not a number 0-3 or a mapping such as 0:1,1:3")


api.Std.from_str = staticmethod(from_str)

from torch.distributed.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
