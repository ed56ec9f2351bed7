"""The one exception tree: environment faults become observations, user errors one CLI line, anything else is a bug.

    ResearchRLError
    ├── EnvironmentFault(kind)   the web, a provider, a reader or an endpoint failed; `kind` is what trajectories count
    │   ├── FetchError           web/errors.py: a page could not be fetched
    │   ├── SearchError          search/base.py: a search provider failed (MissingCredentials: a key is unset)
    │   └── ReaderError          tools/reader.py: the reading agent's endpoint failed
    └── UserError                something the user can fix (a flag, a file, a key, an endpoint, a missing extra)
        ├── ConfigError          a config file or --set value is wrong
        └── MissingDependency    an optional extra is not installed; the message carries the pip command

Tools turn an EnvironmentFault into an observation. The CLI prints a UserError, or an EnvironmentFault that reached it,
as one line with exit code 2 (`options.exit_on_known`). Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ResearchRLError(Exception):
    """Base of every exception researchrl raises on purpose."""


class EnvironmentFault(ResearchRLError):
    """The environment failed, not our code; `kind` names the failure (timeout, http_429, captcha, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class UserError(ResearchRLError, ValueError):
    """A mistake the user can fix; its message says what to change (a ValueError, for callers that validate input)."""


class ConfigError(UserError):
    """A configuration file, preset or --set value is wrong."""


class MissingDependency(UserError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, install: str | None = None):
        command = install or f"pip install 'researchrl[{extra}]'"
        super().__init__(f"{module} is not installed: {command}")
        self.module = module
        self.extra = extra
