package gcfloor

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Limit sources, as SetLimit reports them.
const (
	// LimitNone: no soft memory limit; the collector runs by GOGC alone.
	LimitNone = "none"
	// LimitEnv: the GOMEMLIMIT variable set the runtime's limit.
	LimitEnv = "GOMEMLIMIT"
	// LimitFlag: the caller's limit.
	LimitFlag = "flag"
	// LimitCgroup: nine tenths of the cgroup's memory limit.
	LimitCgroup = "cgroup"
)

// SetLimit gives the garbage collector a soft memory limit
// (debug.SetMemoryLimit): as the Go-managed memory nears it, the collector
// runs more often than GOGC alone would have it, so that the heap's
// garbage gives way before the process reaches a container's limit.
// It is what a proxy whose live heap is well below the limit wants: the
// cost is collections (CPU) only while memory is near the limit. A live
// heap above the limit is not freed by it: the runtime then caps the
// collector at about half the CPU, and the process grows past it.
//
// limit > 0 is the limit in bytes; limit < 0 sets none; limit 0 sets nine
// tenths of the cgroup's memory limit (cgroup v2's memory.max) when there
// is one, else none. The GOMEMLIMIT variable, when set, stands whatever
// limit says. It returns the limit in force (0 for none) and where it
// came from.
func SetLimit(limit int64) (int64, string) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		n := debug.SetMemoryLimit(-1)
		if n == math.MaxInt64 {
			return 0, LimitEnv
		}
		return n, LimitEnv
	}
	from := LimitFlag
	if limit == 0 {
		max, ok := cgroupLimit(cgroupMemoryMax)
		if !ok || max == 0 || max > math.MaxInt64 {
			return 0, LimitNone
		}
		limit, from = int64(max/10*9), LimitCgroup
	}
	if limit < 0 {
		return 0, LimitNone
	}
	debug.SetMemoryLimit(limit)
	return limit, from
}

// ParseLimit reads a memory limit as SetLimit takes it: "" (nine tenths of
// the cgroup's limit, if any), "none", or a number of bytes with an
// optional unit as GOMEMLIMIT writes them (B, KiB, MiB, GiB, TiB), such as
// "400MiB".
func ParseLimit(s string) (int64, error) {
	switch s {
	case "":
		return 0, nil
	case "none":
		return -1, nil
	}
	num, unit := s, int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			num, unit = rest, u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is not a positive number of bytes with an optional unit (B, KiB, MiB, GiB, TiB), nor \"none\"", s)
	}
	return n * unit, nil
}
