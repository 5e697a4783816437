"""tfcourse: a hands-on transfer-learning course in Keras and TensorFlow, one lesson per command."""

__version__ = "0.1.0"


class UserError(ValueError):
    """Bad input a person can fix: the message names the input and what was wrong with it.

    The command line prints it as one paragraph and exits with status 2.
    """


class ExportCheckFailed(RuntimeError):
    """An exported model failed its check against the Keras model; nothing was replaced.

    The command line prints it and exits with status 1.
    """
