# The one exception every decoder in protocols/ raises.


class ProtocolError(Exception):
    """Input was rejected. ``code`` is a stable machine-readable reason (counted by the gateway,
    asserted by tests); ``detail`` is for people and may change between versions."""

    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        return self.code + (": " + self.detail if self.detail else "")
