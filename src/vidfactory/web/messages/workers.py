"""The operator's workers page."""

en = {
    "workers.title": "Workers",
    "workers.worker": "Worker",
    "workers.device": "Device",
    "workers.memory": "Memory",
    "workers.memory_free": "{free} of {total} GiB free",
    "workers.models": "Loaded models",
    "workers.none_loaded": "none loaded",
    "workers.serves": "serves",
    "workers.current_job": "Current job",
    "workers.idle": "idle",
    "workers.last_seen": "Last seen",
    "workers.seen_ago": "{seconds} s ago",
    "workers.live": "live",
    "workers.stale": "not heard from",
    "workers.empty": "No worker has registered. Start one with `vidfactory worker`.",
}

zh = {
    "workers.title": "工作节点",
    "workers.worker": "节点",
    "workers.device": "设备",
    "workers.memory": "显存",
    "workers.memory_free": "空闲 {free} / 共 {total} GiB",
    "workers.models": "已加载模型",
    "workers.none_loaded": "未加载",
    "workers.serves": "可提供",
    "workers.current_job": "当前任务",
    "workers.idle": "空闲",
    "workers.last_seen": "最近心跳",
    "workers.seen_ago": "{seconds} 秒前",
    "workers.live": "在线",
    "workers.stale": "失联",
    "workers.empty": "还没有工作节点注册。用 `vidfactory worker` 启动一个。",
}
