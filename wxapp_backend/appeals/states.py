"""The appeal workflow: states, the table of allowed moves, and the Chinese words staff and users read."""

from __future__ import annotations

import enum


class AppealStatus(enum.StrEnum):
    SUBMITTED = "submitted"  # 接单：企业已提交，待受理
    ACCEPTED = "accepted"  # 已受理，待交办
    ASSIGNED = "assigned"  # 已交办到部门 / 专员
    IN_PROGRESS = "in_progress"  # 办理中
    PENDING_ENTERPRISE = "pending_enterprise"  # 待企业补充材料（计时暂停）
    COORDINATING = "coordinating"  # 协调会办中
    RESOLVED = "resolved"  # 已办结，待企业评价
    CLOSED = "closed"  # 已关闭
    REJECTED = "rejected"  # 不予受理
    DUPLICATE = "duplicate"  # 重复诉求，已并入主诉求
    WITHDRAWN = "withdrawn"  # 企业撤回


S = AppealStatus

TRANSITIONS: dict[AppealStatus, frozenset[AppealStatus]] = {
    S.SUBMITTED: frozenset({S.ACCEPTED, S.REJECTED, S.DUPLICATE, S.WITHDRAWN}),
    S.ACCEPTED: frozenset({S.ASSIGNED, S.IN_PROGRESS, S.PENDING_ENTERPRISE, S.COORDINATING, S.RESOLVED,
                           S.REJECTED, S.DUPLICATE, S.WITHDRAWN}),
    S.ASSIGNED: frozenset({S.IN_PROGRESS, S.ACCEPTED, S.PENDING_ENTERPRISE, S.COORDINATING, S.RESOLVED,
                           S.DUPLICATE, S.WITHDRAWN}),
    S.IN_PROGRESS: frozenset({S.ASSIGNED, S.PENDING_ENTERPRISE, S.COORDINATING, S.RESOLVED, S.DUPLICATE,
                              S.WITHDRAWN}),
    S.PENDING_ENTERPRISE: frozenset({S.ACCEPTED, S.ASSIGNED, S.IN_PROGRESS, S.COORDINATING, S.WITHDRAWN}),
    S.COORDINATING: frozenset({S.IN_PROGRESS, S.PENDING_ENTERPRISE, S.RESOLVED, S.WITHDRAWN}),
    # Resolved waits for the rating: "not resolved" reopens it, the window's end closes it.
    S.RESOLVED: frozenset({S.CLOSED, S.IN_PROGRESS}),
    # A merged child follows its master to resolved, is split off again by staff, or is withdrawn by its enterprise.
    S.DUPLICATE: frozenset({S.RESOLVED, S.ACCEPTED, S.WITHDRAWN}),
    S.CLOSED: frozenset(),
    S.REJECTED: frozenset(),
    S.WITHDRAWN: frozenset(),
}

# Still being worked on: counted as open, watched by the SLA clock.
OPEN = frozenset({S.SUBMITTED, S.ACCEPTED, S.ASSIGNED, S.IN_PROGRESS, S.PENDING_ENTERPRISE, S.COORDINATING})
# The clock runs in these (it is paused while the enterprise owes us information).
CLOCK_RUNNING = OPEN - {S.PENDING_ENTERPRISE}
TERMINAL = frozenset({S.CLOSED, S.REJECTED, S.WITHDRAWN})

LABELS: dict[str, str] = {
    S.SUBMITTED: "已提交", S.ACCEPTED: "已受理", S.ASSIGNED: "已交办", S.IN_PROGRESS: "办理中",
    S.PENDING_ENTERPRISE: "待补充材料", S.COORDINATING: "协调会办中", S.RESOLVED: "已办结",
    S.CLOSED: "已关闭", S.REJECTED: "不予受理", S.DUPLICATE: "已合并", S.WITHDRAWN: "已撤回",
}

# What each timeline event (AppealEvent.action) is called where people read it: the console, the mini-program.
EVENT_LABELS: dict[str, str] = {
    "submitted": "提交诉求", "accepted": "受理", "assigned": "交办", "started": "开始办理",
    "info_requested": "请企业补充材料", "supplemented": "企业补充", "coordinating": "协调会办",
    "tasks_added": "增加会办任务", "task_done": "会办任务办结", "task_cancelled": "会办任务取消", "coordination_done": "会办完成",
    "resolved": "办结", "closed": "关闭", "rejected": "不予受理", "withdrawn": "企业撤回", "reopened": "重新办理",
    "rated": "企业评价", "rectification_opened": "差评整改", "merged": "合并", "child_merged": "并入本诉求",
    "split": "取消合并", "return_requested": "申请退单", "return_rejected": "退单未通过", "return_settled": "退单随交办办结",
    "extension_requested": "申请延期", "extension_approved": "同意延期", "extension_rejected": "不同意延期",
    "urged": "催办", "pressed": "企业催办", "due_soon": "临期提醒", "overdue": "已超期", "escalated": "转办不成事",
    "categorised": "调整分类", "reassigned": "改派部门", "handler_changed": "改派承办人", "noted": "备注",
    "notified": "通知企业", "owner_notified": "通知办不成事窗口负责人", "photos_pending": "照片待保存",
    "photos_attached": "照片已保存", "deadline_recounted": "工作日历调整，时限重算",
    "escalation_overdue": "办不成事超期", "task_overdue": "会办任务超期", "rectification_overdue": "整改任务超期",
    "info_reminded": "提醒企业补充材料", "info_timeout": "未补充材料，继续办理", "staff_notified": "通知部门工作人员",
    "staff_unreachable": "未能提醒工作人员", "grid_changed": "楼宇调整网格",
    "building_changed": "调整楼宇",
}
ACTOR_LABELS: dict[str, str] = {"user": "企业", "staff": "工作人员", "system": "系统"}


def can_move(src: str, dst: str) -> bool:
    return AppealStatus(dst) in TRANSITIONS[AppealStatus(src)]
