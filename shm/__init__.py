"""shm: a slab-allocated shared-memory dict for pre-fork Python programs (lua_shared_dict).

>>> from shm import SharedDict
>>> d = SharedDict.create("counters", "1m")   # FileExistsError if it exists
>>> d.incr("hits", 1, init=0)
1
"""

from .dict import SharedDict
from .errors import IsAList, NoMemory, NotAList, NotANumber, NotFound, ShmError
from .lock import pid_alive
from .sizes import parse_size

__all__ = [
    "SharedDict",
    "NoMemory",
    "NotFound",
    "NotANumber",
    "NotAList",
    "IsAList",
    "ShmError",
    "parse_size",
    "pid_alive",
]
