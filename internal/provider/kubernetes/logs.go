package kubernetes

import (
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// RouteLogs sends the logs of the Kubernetes libraries to log: those of
// controller-runtime's own components (informers, sources, the metrics
// server), which otherwise go nowhere, and client-go's (klog: leader
// election, reflectors), which otherwise have a format of their own on
// standard error. A process calls it once, early: controller-runtime takes
// the first logger it is given, and drops its components' lines for good
// when it has none 30 seconds after their first.
func RouteLogs(log *slog.Logger) {
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
	klog.SetSlogLogger(log)
}
