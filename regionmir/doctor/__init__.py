"""Doctor: checks of the installation, the codecs, the model folder, the GPU and the store.

- :mod:`~regionmir.doctor.checks`: one ``Check`` per concern, ``run_all`` for `regionmir doctor`
- :mod:`~regionmir.doctor.codecs`: decode a tiny image with each compressed transfer syntax
"""

from regionmir.doctor.checks import Check, run_all

__all__ = ["Check", "run_all"]
