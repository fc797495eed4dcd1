"""vidfactory: self-hosted text-to-video with token metering."""

__version__ = "0.1.0"
