-- ptcap's Wireshark dissector: the process, container and pod behind every packet.
--
-- A postdissector: it reads every packet comment (the format ptcap and ptcpdump write,
--   "PID: 123\nCmd: /usr/bin/curl\nArgs: curl ..." then thread, user, parent, container,
--   pod and kernel drop blocks) and turns it into typed, filterable ptcap.* fields, a "ptcap"
--   tree and the process in the Info column.
-- A local conversation's packet (loopback, veth) names both ends: its own process first, then
--   the other end's blocks with every key prefixed by which end it is ("ReceiverPID: ...",
--   "SenderPID: ..."). The ptcap.* fields hold both ends (ptcap.pid == 123 shows process 123's
--   whole conversation, both directions); ptcap.sender.* and ptcap.receiver.* say which is which.
-- Statistics: "Statistics > ptcap Processes" in Wireshark, `-z ptcap,procs` in tshark:
--   packets and bytes per process, container and pod.

local ptcap = Proto("ptcap", "ptcap process context")

local F = {
    pid         = ProtoField.uint32("ptcap.pid", "PID", base.DEC),
    tid         = ProtoField.uint32("ptcap.tid", "Thread ID", base.DEC),
    comm        = ProtoField.string("ptcap.comm", "Command name"),
    cmd         = ProtoField.string("ptcap.cmd", "Command"),
    args        = ProtoField.string("ptcap.args", "Arguments"),
    thread      = ProtoField.string("ptcap.thread", "Thread name"),
    uid         = ProtoField.uint32("ptcap.uid", "User ID", base.DEC),
    gid         = ProtoField.uint32("ptcap.gid", "Group ID", base.DEC),
    user        = ProtoField.string("ptcap.user", "User name"),
    ppid        = ProtoField.uint32("ptcap.ppid", "Parent PID", base.DEC),
    pcmd        = ProtoField.string("ptcap.pcmd", "Parent command"),
    pargs       = ProtoField.string("ptcap.pargs", "Parent arguments"),
    container   = ProtoField.string("ptcap.container", "Container"),
    container_id     = ProtoField.string("ptcap.container.id", "Container ID"),
    container_image  = ProtoField.string("ptcap.container.image", "Container image"),
    container_labels = ProtoField.string("ptcap.container.labels", "Container labels"),
    pod         = ProtoField.string("ptcap.pod", "Pod"),
    pod_namespace    = ProtoField.string("ptcap.pod.namespace", "Pod namespace"),
    pod_uid          = ProtoField.string("ptcap.pod.uid", "Pod UID"),
    pod_labels       = ProtoField.string("ptcap.pod.labels", "Pod labels"),
    pod_annotations  = ProtoField.string("ptcap.pod.annotations", "Pod annotations"),
    drop_reason      = ProtoField.string("ptcap.drop.reason", "Drop reason"),
    drop_location    = ProtoField.string("ptcap.drop.location", "Drop location"),
    last_owner  = ProtoField.bool("ptcap.last_owner", "Last owner (the socket is gone)"),
    forwarded   = ProtoField.bool("ptcap.forwarded", "Forwarded (found through the flow / conntrack)"),
}
-- Directional fields: ptcap.sender.* and ptcap.receiver.*
local ENDS = { "sender", "receiver" }
local DIRECTIONAL = { "pid", "tid", "comm", "cmd", "args", "uid", "user", "container", "pod", "last_owner" }
local D = { sender = {}, receiver = {} }
for _, e in ipairs(ENDS) do
    local title = e == "sender" and "Sender" or "Receiver"
    D[e].pid = ProtoField.uint32("ptcap." .. e .. ".pid", title .. " PID", base.DEC)
    D[e].tid = ProtoField.uint32("ptcap." .. e .. ".tid", title .. " thread ID", base.DEC)
    D[e].comm = ProtoField.string("ptcap." .. e .. ".comm", title .. " command name")
    D[e].cmd = ProtoField.string("ptcap." .. e .. ".cmd", title .. " command")
    D[e].args = ProtoField.string("ptcap." .. e .. ".args", title .. " arguments")
    D[e].uid = ProtoField.uint32("ptcap." .. e .. ".uid", title .. " user ID", base.DEC)
    D[e].user = ProtoField.string("ptcap." .. e .. ".user", title .. " user name")
    D[e].container = ProtoField.string("ptcap." .. e .. ".container", title .. " container")
    D[e].pod = ProtoField.string("ptcap." .. e .. ".pod", title .. " pod")
    D[e].last_owner = ProtoField.bool("ptcap." .. e .. ".last_owner", title .. " is the last owner")
    for _, key in ipairs(DIRECTIONAL) do F[e .. "_" .. key] = D[e][key] end
end
ptcap.fields = F

-- comment key -> { context key, field, is a number }
local KEYS = {
    PID = { "pid", F.pid, true },
    Cmd = { "cmd", F.cmd },
    Args = { "args", F.args },
    COMMAND = { "comm", F.comm },       -- ptcpdump's first releases: the comm only
    ThreadId = { "tid", F.tid, true },
    ThreadName = { "thread", F.thread },
    UserId = { "uid", F.uid, true },
    GroupId = { "gid", F.gid, true },
    UserName = { "user", F.user },
    ParentPID = { "ppid", F.ppid, true },
    ParentCmd = { "pcmd", F.pcmd },
    ParentArgs = { "pargs", F.pargs },
    ContainerName = { "container", F.container },
    ContainerId = { "container_id", F.container_id },
    ContainerImage = { "container_image", F.container_image },
    ContainerLabels = { "container_labels", F.container_labels },
    PodName = { "pod", F.pod },
    PodNamespace = { "pod_namespace", F.pod_namespace },
    PodUID = { "pod_uid", F.pod_uid },
    PodLabels = { "pod_labels", F.pod_labels },
    PodAnnotations = { "pod_annotations", F.pod_annotations },
    DropReason = { "drop_reason", F.drop_reason },
    DropLocation = { "drop_location", F.drop_location },
    LastOwner = { "last_owner", F.last_owner, "bool" },
    Forwarded = { "forwarded", F.forwarded, "bool" },
}
local ROLES = { Receiver = "receiver", Sender = "sender" }

-- the order of the tree: process, thread, user, parent, container, pod, drop
local ORDER = { "pid", "comm", "cmd", "args", "tid", "thread", "uid", "gid", "user", "ppid", "pcmd",
                "pargs", "container", "container_id", "container_image", "container_labels",
                "pod", "pod_namespace", "pod_uid", "pod_labels", "pod_annotations",
                "drop_reason", "drop_location", "last_owner", "forwarded" }
local FIELD_OF = {}
for _, spec in pairs(KEYS) do FIELD_OF[spec[1]] = spec[2] end

local frame_comment = Field.new("frame.comment")

local function exe_name(cmd)
    return string.sub(string.match(cmd, "([^/]*)$"), 1, 15)
end

local function set(ctx, spec, value)
    if spec[3] == "bool" then
        ctx[spec[1]] = value == "yes"
        return true
    elseif spec[3] then
        -- an ID is a uint32 written in decimal digits: anything else (a damaged or forged
        -- comment: "1e9", "-1", 20 digits) is left out rather than shown wrong
        local n = string.match(value, "^%s*(%d+)%s*$")
        n = n and #n <= 10 and tonumber(n)
        if n and n <= 4294967295 then ctx[spec[1]] = n; return true end
    elseif value ~= "" then
        ctx[spec[1]] = value
        return true
    end
    return false
end

-- the kernel's comm of the task behind the packet (what --pname matches): the thread's
-- name, else the executable's base name cut to 15 bytes as the kernel cuts it
local function complete(ctx)
    if ctx.comm == nil then
        ctx.comm = ctx.thread or (ctx.cmd and exe_name(ctx.cmd))
    end
end

-- The context of one packet from its comments (nil when none carries any); the other local
-- end's, when named, in ctx.peer with its role ("sender" or "receiver") in ctx.peer_role.
local function parse(comments)
    local ctx, found = {}, false
    for _, text in ipairs(comments) do
        for line in string.gmatch(text, "[^\r\n]+") do
            local key, value = string.match(line, "^%s*([%a]+):%s?(.*)$")
            local target = ctx
            if key and not KEYS[key] then
                local role, rest = string.match(key, "^(Receiver)(%a+)$")
                if not role then role, rest = string.match(key, "^(Sender)(%a+)$") end
                if role and KEYS[rest] then
                    if ctx.peer == nil then ctx.peer = {}; ctx.peer_role = ROLES[role] end
                    target, key = ctx.peer, rest
                end
            end
            local spec = key and KEYS[key]
            if spec and set(target, spec, value) then found = true end
        end
    end
    if not found then return nil end
    complete(ctx)
    if ctx.peer then complete(ctx.peer) end
    return ctx
end

local packet_direction = Field.new("frame.packet_flags_direction")

local function packet_context()
    local texts = {}
    for _, fi in ipairs({ frame_comment() }) do
        texts[#texts + 1] = tostring(fi.value)
    end
    if #texts == 0 then return nil end
    local ctx = parse(texts)
    if ctx == nil then return nil end
    -- which end the packet's own process is: the peer's role says, else the direction
    if ctx.peer_role then
        ctx.role = ctx.peer_role == "receiver" and "sender" or "receiver"
    else
        local d = packet_direction()
        local dir = d and d.value
        if dir == 1 then ctx.role = "receiver" elseif dir == 2 then ctx.role = "sender" end
    end
    return ctx
end

local function who(ctx)
    local words = {}
    if ctx.pid then words[#words + 1] = string.format("%s %d", ctx.comm or "?", ctx.pid) end
    if ctx.container or ctx.container_id then
        words[#words + 1] = "container " .. (ctx.container or string.sub(ctx.container_id, 1, 12))
    end
    if ctx.pod then
        words[#words + 1] = "pod " .. ctx.pod .. (ctx.pod_namespace and ("." .. ctx.pod_namespace) or "")
    end
    if ctx.last_owner then words[#words + 1] = "last owner" end
    return table.concat(words, ", ")
end

local function summary(ctx)
    local text = who(ctx)
    if ctx.drop_reason then text = text .. (text ~= "" and ", " or "") .. "drop " .. ctx.drop_reason end
    if ctx.peer then
        local other = who(ctx.peer)
        if other ~= "" then
            text = ctx.peer_role == "receiver" and ((text ~= "" and text or "?") .. " -> " .. other)
                or (other .. " -> " .. (text ~= "" and text or "?"))
        end
    end
    return text
end

-- one end's fields: the ptcap.* ones (either end) and the directional ones
local function add_end(tree, ctx, role)
    for _, key in ipairs(ORDER) do
        local value = ctx[key]
        if value ~= nil then
            tree:add(FIELD_OF[key], value):set_generated()
        end
    end
    if role then
        for _, key in ipairs(DIRECTIONAL) do
            local value = ctx[key]
            if value ~= nil then tree:add(D[role][key], value):set_generated() end
        end
    end
end

function ptcap.dissector(tvb, pinfo, tree)
    local ctx = packet_context()
    if ctx == nil then return end
    local text = summary(ctx)
    local sub = tree:add(ptcap, text ~= "" and ("ptcap: " .. text) or "ptcap")
    add_end(sub, ctx, ctx.role)
    if ctx.peer then
        local title = ctx.peer_role == "receiver" and "Receiver" or "Sender"
        local peer = sub:add(ptcap, title .. ": " .. who(ctx.peer))
        add_end(peer, ctx.peer, ctx.peer_role)
    end
    if text ~= "" then
        pinfo.cols.info:append(" [" .. text .. "]")
    end
end

register_postdissector(ptcap, true)

-- Statistics: packets and bytes per process, container and pod ---------------------------

local function new_counts()
    return { process = {}, container = {}, pod = {} }
end

local function count(tbl, key, bytes, label)
    local row = tbl[key]
    if row == nil then
        row = { packets = 0, bytes = 0, label = label or key }
        tbl[key] = row
    end
    row.packets = row.packets + 1
    row.bytes = row.bytes + bytes
    return row
end

-- One row per process: named by its main thread once one of its packets is seen, else by
-- the first thread seen (threads inherit the process's name unless they rename themselves)
local function count_process(tbl, ctx, bytes)
    local row = count(tbl, ctx.pid, bytes, string.format("%s (%d)", ctx.comm or "?", ctx.pid))
    if ctx.thread and ctx.tid == ctx.pid and not row.named then
        row.label = string.format("%s (%d)", ctx.thread, ctx.pid)
        row.named = true
    end
end

local function sorted_rows(tbl)
    local rows = {}
    for _, row in pairs(tbl) do rows[#rows + 1] = { key = row.label, packets = row.packets, bytes = row.bytes } end
    table.sort(rows, function(a, b)
        if a.bytes ~= b.bytes then return a.bytes > b.bytes end
        return a.key < b.key
    end)
    return rows
end

-- 66 columns: Wireshark's text window (Statistics > ptcap Processes) shows about 73 of them
-- before it wraps a line
local HEADING, ROW = "%-40s %10s %14s", "%-40s %10d %14d"

local function report(counts)
    local out = {}
    local rule = string.rep("=", 66)
    out[#out + 1] = rule
    out[#out + 1] = "ptcap Processes: packets and bytes per process, container and pod"
    local sections = {
        { "process", "Process (comm, PID)" }, { "container", "Container" }, { "pod", "Pod (name.namespace)" },
    }
    for _, section in ipairs(sections) do
        local rows = sorted_rows(counts[section[1]])
        if #rows > 0 then
            out[#out + 1] = ""
            out[#out + 1] = string.format(HEADING, section[2], "Packets", "Bytes")
            for _, row in ipairs(rows) do
                out[#out + 1] = string.format(ROW, row.key, row.packets, row.bytes)
            end
        end
    end
    out[#out + 1] = rule
    return table.concat(out, "\n") .. "\n"
end

-- A tap over every frame; `show` gets the report at each draw.
local function processes_tap(filter, show)
    local counts = new_counts()
    local tap = Listener.new("frame", filter, true)
    function tap.packet(pinfo, tvb)
        local ctx = packet_context()
        local bytes = pinfo.len
        if ctx == nil or (ctx.pid == nil and (ctx.peer == nil or ctx.peer.pid == nil)) then
            count(counts.process, "(no process)", bytes)
            return
        end
        -- a local conversation's packet counts for both its ends (once each)
        local seen = {}
        for _, c in ipairs({ ctx, ctx.peer }) do
            if c.pid and not seen["p" .. c.pid] then
                seen["p" .. c.pid] = true
                count_process(counts.process, c, bytes)
            end
            local container = c.container or c.container_id
            if container and not seen["c" .. container] then
                seen["c" .. container] = true
                count(counts.container, container, bytes)
            end
            if c.pod then
                local pod = c.pod .. "." .. (c.pod_namespace or "")
                if not seen["o" .. pod] then
                    seen["o" .. pod] = true
                    count(counts.pod, pod, bytes)
                end
            end
        end
    end
    function tap.draw() show(report(counts)) end
    function tap.reset() counts = new_counts() end
    return tap
end

-- tshark -z ptcap,procs[,FILTER]
register_stat_cmd_arg("ptcap,procs", function(arg)
    local filter = string.match(arg or "", "^ptcap,procs,(.+)$")
    processes_tap(filter, function(text) io.write(text) end)
end)

-- Statistics > ptcap Processes. Wireshark 4.0's Qt menus show MENU_STAT_UNSORTED (and not
-- MENU_STAT_GENERIC); they take the name as it is, so it has no "/" submenu.
if gui_enabled() then
    register_menu("ptcap Processes", function()
        local win = TextWindow.new("ptcap Processes")
        local tap = processes_tap(nil, function(text) win:set(text) end)
        win:set_atclose(function() tap:remove() end)
        retap_packets()
    end, MENU_STAT_UNSORTED)
end
