"""File formats and where files live: distilled sets (reading them, their one writer, what they record, their
stored soft labels), expert files, torch files, object storage."""

from raydd.io.distilled import DistilledSet
from raydd.io.run_folder import OutputExistsError, RunFolder
from raydd.io.set_info import SetInfo
from raydd.io.writer import DistilledSetWriter

__all__ = ["DistilledSet", "DistilledSetWriter", "OutputExistsError", "RunFolder", "SetInfo"]
