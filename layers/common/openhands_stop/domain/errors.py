"""The one failure the domain knows of: a dependency (table, queue, key store) failed."""


class DependencyFailure(Exception):
    """A call to AWS failed. ``transient`` tells whether a retry may succeed (throttling,
    timeouts, service unavailable); the message is for logs only, never for a response body.
    """

    def __init__(self, dependency: str, detail: str, *, transient: bool) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail
        self.transient = transient
