"""An object a checkpoint may hold that the safe loader refuses."""
import collections

Point = collections.namedtuple('Point', 'x y')


class Meta:
    """Stands for any project class pickled into a checkpoint."""
