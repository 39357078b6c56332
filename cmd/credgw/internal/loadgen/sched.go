package loadgen

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Readers' priority. bench slow's readers stand in for 10,000 devices
// on networks of their own; on one machine they take the cores the
// gateway needs, and the p99s then measure the bench. At the kernel's
// idle priority (SCHED_IDLE) they take only CPU that the gateway and
// the prober, at normal priority, leave: what devices elsewhere cost
// the gateway's cores. The prober is a child process, so it starts at
// the bench's idle priority and has to leave it (leaveIdle), which
// takes root (CAP_SYS_NICE) or an RLIMIT_NICE of 20.

// setPolicy sets the scheduling policy of every thread of this process.
// Linux schedules threads, not processes: each is set, then any started
// meanwhile, until a pass finds none new. A thread started afterwards
// inherits the policy of the thread that started it, so the runtime's
// later threads have it too.
func setPolicy(policy uint32) error {
	done := map[int]bool{}
	for {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			done[tid], fresh = true, fresh+1
			attr := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy}
			if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: sched_setattr: %w", tid, err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
}

// threads lists this process's threads.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// errIdleNotAllowed: the prober could not return to normal priority.
var errIdleNotAllowed = errors.New("bench: --readers-priority idle: the prober, started from this process, could not return to normal priority: run as root (CAP_SYS_NICE) or with ulimit -e 20, or use --readers-priority normal")

// yieldCPU puts this process at idle priority, after checking that its
// prober child will be allowed to leave it.
func yieldCPU() error {
	if !mayLeaveIdle() {
		return errIdleNotAllowed
	}
	if err := setPolicy(unix.SCHED_IDLE); err != nil {
		return fmt.Errorf("bench: --readers-priority idle: %w", err)
	}
	return nil
}

// leaveIdle returns this process to normal priority if it started at
// idle priority (a prober started by a bench at idle priority).
func leaveIdle() error {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return fmt.Errorf("bench: sched_getattr: %w", err)
	}
	if attr.Policy != unix.SCHED_IDLE {
		return nil
	}
	if err := setPolicy(unix.SCHED_NORMAL); err != nil {
		return fmt.Errorf("bench: the prober could not leave the bench's idle priority: %w", err)
	}
	return nil
}

// mayLeaveIdle tells whether a thread of this user may go from idle to
// normal priority: the kernel allows it with CAP_SYS_NICE (root here)
// or an RLIMIT_NICE that allows nice 0 (20 - 0).
func mayLeaveIdle() bool {
	if os.Geteuid() == 0 {
		return true
	}
	var rl unix.Rlimit
	return unix.Getrlimit(unix.RLIMIT_NICE, &rl) == nil && rl.Cur >= 20
}
