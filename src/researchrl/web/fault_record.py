"""An environment fault as plain data, for the cache's JSON entries and for faults sent back by Ray tool workers.

The exceptions themselves neither pickle nor serialize: their constructors take other arguments than `args`.
"""

from __future__ import annotations

from dataclasses import dataclass

from researchrl.errors import EnvironmentFault
from researchrl.web.redact import scrub

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class FaultRecord:
    """An exception's class name, `args` (its message) and plain attributes (kind, url, provider, ...)."""

    type: str  # "module.QualName"
    args: tuple[object, ...]
    attrs: dict[str, Scalar]

    @classmethod
    def of(cls, err: Exception) -> FaultRecord:
        """`err` as data, every string redacted (it is stored or sent on); attributes that are not plain values are dropped."""
        attrs = {k: v for k, v in vars(err).items() if isinstance(v, (str, int, float, bool, type(None)))}
        return cls(f"{type(err).__module__}.{type(err).__qualname__}", scrub(tuple(err.args)), scrub(attrs))

    @property
    def kind(self) -> str | None:
        """The fault's kind (timeout, http_500, ssrf_refused, ...)."""
        kind = self.attrs.get("kind")
        return kind if isinstance(kind, str) else None

    def rebuild(self, base: type[Exception] = EnvironmentFault) -> Exception:
        """The same exception, its class looked up among `base`'s loaded subclasses (never imported by name).

        A subclass whose module is not loaded in this process comes back as `base`, with the same kind and message.
        """
        classes, pending = [], [base]
        while pending:
            cls = pending.pop()
            classes.append(cls)
            pending.extend(cls.__subclasses__())
        cls = next((c for c in classes if f"{c.__module__}.{c.__qualname__}" == self.type), base)
        err = cls.__new__(cls)
        Exception.__init__(err, *self.args)
        vars(err).update(self.attrs)
        return err
