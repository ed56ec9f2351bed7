"""Why a page could not be read: one exception whose `kind` becomes the observation's error name."""

from __future__ import annotations

from researchrl.errors import EnvironmentFault


class FetchError(EnvironmentFault):
    """A page fetch failed for an environment reason (`kind`: timeout, connect, http_404, ssrf_refused, too_large, ...)."""

    def __init__(self, url: str, kind: str, message: str):
        super().__init__(kind, f"{kind}: {message}")
        self.url = url
