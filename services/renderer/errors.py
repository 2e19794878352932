"""The renderer's one input error, raised by the pipeline and the adapter stores alike."""


class RenderInputError(ValueError):
    """The request cannot be rendered as given (bad sizes, steps, adapter bytes...)."""
