"""The model under test: its variants (``variants``), its content as files and hub commits
(``content``), where and in what dtype it loads (``devices``, ``plan``, ``workers``), its
quantization (``quantization``) and adapter (``adapters``), and the load itself (``load``)."""
