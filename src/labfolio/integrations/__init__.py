"""labfolio inside the tools people already train with, and their old runs brought in.

Each integration lives in its own module and needs its own optional dependency, imported only
when that module is used:

- ``labfolio.integrations.hf``: ``LabfolioCallback`` for Hugging Face ``Trainer``
  (``pip install 'labfolio[hf]'``);
- ``labfolio.integrations.lightning``: ``LabfolioLogger`` for Lightning's ``Trainer``
  (``pip install 'labfolio[lightning]'``);
- ``labfolio.integrations.tensorboard``: ``import_tensorboard`` for event files
  (``pip install 'labfolio[tensorboard]'``);
- ``labfolio.integrations.wandb_import``: ``import_wandb`` for offline run folders
  (``pip install 'labfolio[wandb]'``) and CSV/JSON history exports (no extra needed).

Code written against the ``wandb`` API runs unchanged through ``labfolio.compat.wandb``.
"""

__all__: list[str] = []
