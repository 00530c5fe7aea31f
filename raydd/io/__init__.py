"""File formats and where files live: distilled sets (reading them, and their one writer), expert files, object
storage."""

from raydd.io.distilled import DistilledSet, OutputExistsError, RunFolder
from raydd.io.writer import DistilledSetWriter

__all__ = ["DistilledSet", "DistilledSetWriter", "OutputExistsError", "RunFolder"]
