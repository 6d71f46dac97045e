"""Example files: readers/writers for chat, Alpaca, prompt/completion, query/response, halu test and
translation formats, normalised to `Record`s with provenance."""

from delia.data.formats import FORMATS, detect_format
from delia.data.io import read_lines, read_records, record_to_dict, validate_file, write_records
from delia.data.records import DataError, FieldError, Problem, Record
from delia.data.stats import data_stats

__all__ = ["FORMATS", "DataError", "FieldError", "Problem", "Record", "data_stats", "detect_format",
           "read_lines", "read_records", "record_to_dict", "validate_file", "write_records"]
