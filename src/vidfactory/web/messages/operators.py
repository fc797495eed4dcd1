"""Words every operator page shares: paging and the validation errors shown next to a field."""

en = {
    "operators.next_page": "Next page",
    "operators.error_gt": "Must be more than {gt}.",
    "operators.error_ge": "Must be at least {ge}.",
    "operators.error_lt": "Must be less than {lt}.",
    "operators.error_le": "Must be at most {le}.",
    "operators.error_required": "Required.",
    "operators.error_too_long": "At most {max_length} characters.",
    "operators.error_pattern": "Letters, digits, - and _ only.",
    "operators.error_number": "Enter a whole number.",
    "operators.error_invalid": "This value is not accepted.",
    "operators.never": "never",
}

zh = {
    "operators.next_page": "下一页",
    "operators.error_gt": "必须大于 {gt}。",
    "operators.error_ge": "不能小于 {ge}。",
    "operators.error_lt": "必须小于 {lt}。",
    "operators.error_le": "不能大于 {le}。",
    "operators.error_required": "必填。",
    "operators.error_too_long": "最多 {max_length} 个字符。",
    "operators.error_pattern": "只能包含字母、数字、- 和 _。",
    "operators.error_number": "请输入整数。",
    "operators.error_invalid": "该值不被接受。",
    "operators.never": "从未",
}
