"""Exception types that are the user's to fix: the CLI prints them as one clear message, no traceback."""

from delia.config import ConfigError
from delia.data.records import DataError
from delia.diversify.stage import DiversifyError
from delia.evaluation.neural import MetricUnavailable
from delia.files import LockError
from delia.mixing.build import BuildError
from delia.models import ModelNotFoundError
from delia.registry import RegistryError
from delia.sampling import CacheError, EngineError, SelfQueryError
from delia.training.artifacts import RunError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, ModelNotFoundError, RegistryError,
                                                 FileNotFoundError, DiversifyError, BuildError, RunError,
                                                 CacheError, EngineError, SelfQueryError, MetricUnavailable,
                                                 LockError)
