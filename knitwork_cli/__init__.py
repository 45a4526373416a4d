"""The entry layer: the ``knitwork`` command. It parses arguments, sets the process-wide
defaults (``knitwork_cli.environment``), calls the layers below (``knitwork``, ``pipeline``,
``tune``, ``knitwork_compare``) and prints. Nothing imports it."""
