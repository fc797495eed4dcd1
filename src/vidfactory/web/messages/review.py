"""The review desk."""

en = {
    "review.title": "Review desk",
    "review.video": "Video",
    "review.reason": "Why it is held",
    "review.approve": "Approve",
    "review.empty": "Nothing is waiting for review.",
}

zh = {
    "review.title": "审核台",
    "review.video": "视频",
    "review.reason": "拦截原因",
    "review.approve": "通过",
    "review.empty": "暂无待审核内容。",
}
