package kubernetes

import (
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// The API client's request limits: the flags' when given (over the
// kubeconfig's), else the kubeconfig's, else the controller's defaults;
// the caller's configuration is never changed.
func TestClientLimits(t *testing.T) {
	limiter := flowcontrol.NewTokenBucketRateLimiter(7, 7)
	for _, tc := range []struct {
		name       string
		kube       rest.Config
		qps        float32
		burst      int
		wantQPS    float32
		wantBurst  int
		wantCustom bool
	}{
		{"nothing set", rest.Config{}, 0, 0, clientQPS, clientBurst, false},
		{"the kubeconfig's", rest.Config{QPS: 30, Burst: 40}, 0, 0, 30, 40, false},
		{"the kubeconfig's limiter", rest.Config{RateLimiter: limiter}, 0, 0, 0, 0, true},
		{"the flags'", rest.Config{}, 500, 800, 500, 800, false},
		{"the flags' over the kubeconfig's", rest.Config{QPS: 30, Burst: 40, RateLimiter: limiter}, 500, 800, 500, 800, false},
		{"a rate alone: twice the rate at once", rest.Config{}, 250, 0, 250, 500, false},
		{"a small rate: a burst of one", rest.Config{}, 0.2, 0, 0.2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.kube
			got := clientLimits(&in, tc.qps, tc.burst)
			if got.QPS != tc.wantQPS || got.Burst != tc.wantBurst || (got.RateLimiter != nil) != tc.wantCustom {
				t.Errorf("QPS %v, burst %d, own limiter %v; want %v, %d, %v", got.QPS, got.Burst, got.RateLimiter != nil, tc.wantQPS, tc.wantBurst, tc.wantCustom)
			}
			if in.QPS != tc.kube.QPS || in.Burst != tc.kube.Burst || in.RateLimiter != tc.kube.RateLimiter {
				t.Error("the caller's configuration was changed")
			}
		})
	}
}
