"""The gallery and the video page."""

en = {
    "videos.title": "Videos",
    "videos.empty": "No videos yet.",
    "videos.status": "Status",
    "videos.progress": "Progress",
    "videos.prompt": "Prompt",
    "videos.created": "Created",
    "videos.newer": "Newer",
    "videos.older": "Older",
    "video.title": "Video",
    "video.download": "Download",
    "video.sha256": "SHA-256",
    "video.model": "Model",
    "video.size": "Size",
    "video.seconds": "Seconds",
}

zh = {
    "videos.title": "视频",
    "videos.empty": "还没有视频。",
    "videos.status": "状态",
    "videos.progress": "进度",
    "videos.prompt": "提示词",
    "videos.created": "创建时间",
    "videos.newer": "较新",
    "videos.older": "较早",
    "video.title": "视频",
    "video.download": "下载",
    "video.sha256": "SHA-256",
    "video.model": "模型",
    "video.size": "尺寸",
    "video.seconds": "秒数",
}
