"""The operator's alerts page."""

en = {
    "alerts.title": "Alerts",
    "alerts.when": "Raised",
    "alerts.kind": "Kind",
    "alerts.message": "Message",
    "alerts.state": "State",
    "alerts.acknowledge": "Acknowledge",
    "alerts.acknowledged": "acknowledged by {who} at {when}",
    "alerts.done": "Alert acknowledged.",
    "alerts.empty": "No alerts. Nothing needs an operator right now.",
}

zh = {
    "alerts.title": "告警",
    "alerts.when": "发生时间",
    "alerts.kind": "类型",
    "alerts.message": "内容",
    "alerts.state": "状态",
    "alerts.acknowledge": "确认",
    "alerts.acknowledged": "{who} 已于 {when} 确认",
    "alerts.done": "告警已确认。",
    "alerts.empty": "没有告警。目前无需运营处理。",
}
