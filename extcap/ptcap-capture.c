/* ptcap-capture: the privileged half of ptcap's Wireshark extcap, as dumpcap is Wireshark's.
 *
 * Installed root:wireshark 0750 with the file capabilities cap_bpf, cap_perfmon and
 * cap_net_admin (nothing else: no CAP_DAC_OVERRIDE, so every path is opened with the user's
 * own rights; no CAP_SYS_ADMIN, so no namespace can be entered). Only members of the group
 * `wireshark` can run it. It runs one thing: the root-owned, isolated interpreter of the
 * root-owned install (python -I: no PYTHON* variables, no user site, no script or current
 * directory on the path) on the extcap module, with the extcap's own capture options only:
 *
 *   ptcap-capture --capture --extcap-interface IFACE --fifo FIFO [--OPTION VALUE ...]
 *
 * What it does before the exec:
 *   - refuses any argument that is not one of those options (so no `-- CMD`, no `-w`, no
 *     interpreter flag); the module checks their values again;
 *   - empties the environment (no LD_*, PYTHON*, HOME, ...) and sets a fixed PATH;
 *   - closes every file descriptor above stderr;
 *   - raises its capabilities into the ambient set, which is the only way they survive the
 *     exec of an interpreter that has no file capabilities itself (the module clears the
 *     ambient set again at once, so nothing it could start inherits them), and sets
 *     no_new_privs;
 *   - sets the parent-death signal again (the exec of a binary with file capabilities
 *     cleared it) and gives up if its parent is already gone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PTCAP_PYTHON
#error "build with -DPTCAP_PYTHON=\"/opt/ptcap/.venv/bin/python\""
#endif

#define MODULE "ptcap.cli.extcap"
#define MAX_ARGS 64

static const int CAPS[] = {CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN};
#define NCAPS (int)(sizeof(CAPS) / sizeof(CAPS[0]))

/* the options of the extcap's dialog that take a value, and its two flags */
static const char *const VALUE_OPTIONS[] = {
    "--extcap-interface", "--fifo", "--extcap-capture-filter", "--interfaces", "--backend",
    "--snaplen", "--direction", "--netns", "--pid", "--pname", "--uid", "--container", "--pod",
    "--log-level", "--log-file", "--extcap-version", NULL,
};
static const char *const FLAG_OPTIONS[] = {"--follow-forks", "--embed-keylog-to-pcapng", NULL};

static const char *fifo_path;      /* Wireshark's fifo, opened (as the user) to fail */

/* One line on stderr, exit 1; Wireshark's reader waits for a writer to open its fifo, so
 * open it (with the user's own rights: this helper has no CAP_DAC_OVERRIDE) and close it. */
static void fail(const char *what, const char *detail) {
    fprintf(stderr, "ptcap: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    if (fifo_path) {
        alarm(10);
        int fd = open(fifo_path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
        if (fd >= 0)
            close(fd);
    }
    exit(1);
}

static void find_fifo(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--fifo=", 7) == 0)
            fifo_path = argv[i] + 7;
        else if (strcmp(argv[i], "--fifo") == 0 && i + 1 < argc)
            fifo_path = argv[i + 1];
    }
}

/* 1 if arg is NAME or NAME=..., with *inline_value set for the second */
static int matches(const char *arg, const char *name, const char **inline_value) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '\0') {
        *inline_value = NULL;
        return 1;
    }
    if (arg[n] == '=') {
        *inline_value = arg + n + 1;
        return 1;
    }
    return 0;
}

static int known(const char *const *names, const char *arg, const char **inline_value) {
    for (int i = 0; names[i]; i++)
        if (matches(arg, names[i], inline_value))
            return 1;
    return 0;
}

static void check_arguments(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--capture") != 0)
        fail("this helper only runs captures for the ptcap extcap", "its first argument must be --capture");
    if (argc > MAX_ARGS)
        fail("too many arguments", NULL);
    for (int i = 2; i < argc; i++) {
        const char *value;
        if (known(FLAG_OPTIONS, argv[i], &value)) {
            if (value)
                fail("takes no value", argv[i]);
            continue;
        }
        if (!known(VALUE_OPTIONS, argv[i], &value))
            fail("not an option of the ptcap extcap", argv[i]);
        if (!value && ++i >= argc)
            fail("needs a value", argv[i - 1]);
    }
}

static void raise_ambient(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &header, data) != 0)
        fail("capget", strerror(errno));
    for (int i = 0; i < NCAPS; i++) {
        int c = CAPS[i];
        if (!(data[c / 32].permitted & (1u << (c % 32))))
            fail("this helper lacks its capabilities (cap_bpf, cap_perfmon, cap_net_admin)",
                 "reinstall with install.sh, on a file system with extended attributes");
        data[c / 32].inheritable |= 1u << (c % 32);
    }
    if (syscall(SYS_capset, &header, data) != 0)
        fail("capset", strerror(errno));
    for (int i = 0; i < NCAPS; i++)
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPS[i], 0, 0) != 0)
            fail("raising the ambient capabilities", strerror(errno));
}

int main(int argc, char **argv) {
    pid_t parent = getppid();
    find_fifo(argc, argv);
    check_arguments(argc, argv);

    /* dies with its parent (Wireshark, tshark), even by SIGKILL; the module keeps it */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0 || getppid() != parent || parent == 1)
        fail("the process that started the capture is gone", NULL);

    if (clearenv() != 0)
        fail("clearenv", NULL);
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("LC_ALL", "C.UTF-8", 1);
    closefrom(3);

    raise_ambient();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail("no_new_privs", strerror(errno));

    char *args[MAX_ARGS + 8];
    int n = 0;
    args[n++] = PTCAP_PYTHON;
    args[n++] = "-I";
    args[n++] = "-m";
    args[n++] = MODULE;
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(PTCAP_PYTHON, args);
    fail(PTCAP_PYTHON, strerror(errno));
    return 1;
}
