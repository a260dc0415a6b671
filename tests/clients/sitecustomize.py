"""Lets dcoscli 0.6.1, written for Python 3.5, run on today's Python: the ABC aliases it uses
were removed from `collections` in 3.10. Installed into the clients' virtualenv only."""
import collections
import collections.abc

for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable", "Set", "MutableSet"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
