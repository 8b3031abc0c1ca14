module trellis.dev/trellis/bench/gotrace-waits

go 1.25

require golang.org/x/exp v0.0.0-20251219203646-944ab1f22d93
