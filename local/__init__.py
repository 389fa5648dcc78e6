"""Local tooling: the AWS emulation, ``make run`` and ``make invoke``. Not shipped to Lambda."""
