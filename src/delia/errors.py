"""Exception types that are the user's to fix: the CLI prints them as one clear message, no traceback."""

from delia.config import ConfigError
from delia.data.records import DataError
from delia.models import ModelNotFoundError
from delia.registry import RegistryError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, ModelNotFoundError, RegistryError,
                                                 FileNotFoundError)
