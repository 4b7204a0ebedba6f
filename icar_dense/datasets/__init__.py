from .action_zeroshot import ZeroShotVideoDataset  # noqa: F401,E402
