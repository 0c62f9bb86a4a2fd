"""The project's loggers decide what is shown, not the root logger's level.

Sacred sets the ROOT logger's level (``--loglevel``; the driver's throwaway config run uses ERROR), and the standard
library filters a record by the level of the first logger on its way up that has one. Giving the project's top-level
loggers their own level makes their warnings and errors (and INFO notes) pass whatever the root level is; they are
then written by the root's handlers (Sacred's, or Python's last-resort stderr handler for WARNING and above when none
is configured). A level set by the user before or after import is kept."""
import logging

PROJECT_LOGGERS = ("shared_apt", "vilt", "meter")


def configure(level: int = logging.INFO) -> None:
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
