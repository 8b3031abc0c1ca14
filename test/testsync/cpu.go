package testsync

import (
	"syscall"
	"time"
)

// CPUTime is the CPU time, user and system, the process has used (0 if
// the kernel does not say). Benchmarks report it per operation: load
// inflates it less than wall time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
