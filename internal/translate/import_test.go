package translate

import (
	"maps"
	"strings"
	"testing"
)

func TestParseClusterWeights(t *testing.T) {
	tests := []struct {
		value   string
		absent  bool
		want    map[string]int32
		errLike string
	}{
		{absent: true, want: nil},
		{value: "east=90,west=10", want: map[string]int32{"east": 90, "west": 10}},
		{value: " east = 90 , west=0 ", want: map[string]int32{"east": 90, "west": 0}},
		{value: "east=1000000", want: map[string]int32{"east": 1_000_000}},
		{value: "eu.west-1=5", want: map[string]int32{"eu.west-1": 5}},
		{value: "", errLike: "is empty"},
		{value: "  ", errLike: "is empty"},
		{value: "east", errLike: `entry 1 "east" is not cluster=weight`},
		{value: "east=90,", errLike: `entry 2 "" is not cluster=weight`},
		{value: "east=ninety", errLike: `weight "ninety" of cluster "east"`},
		{value: "east=-1", errLike: `weight "-1"`},
		{value: "east=1000001", errLike: `weight "1000001"`},
		{value: "east=99999999999", errLike: `weight "99999999999"`},
		{value: "east=1.5", errLike: `weight "1.5"`},
		{value: "East=1", errLike: `"East" is not a valid cluster name`},
		{value: "=1", errLike: `"" is not a valid cluster name`},
		{value: "east=1,east=2", errLike: `cluster "east" is named twice`},
		{value: "east=0,west=0", errLike: "every weight is 0"},
	}
	for _, tt := range tests {
		annotations := map[string]string{"other": "x"}
		if !tt.absent {
			annotations[ClusterWeightsAnnotation] = tt.value
		}
		got, err := parseClusterWeights(annotations)
		switch {
		case tt.errLike != "" && (err == nil || !strings.Contains(err.Error(), tt.errLike)):
			t.Errorf("%q: error %v, want one containing %q", tt.value, err, tt.errLike)
		case tt.errLike == "" && err != nil:
			t.Errorf("%q: %v", tt.value, err)
		case tt.errLike != "" && got != nil:
			t.Errorf("%q: weights %v returned with an error", tt.value, got)
		case !maps.Equal(got, tt.want):
			t.Errorf("%q = %v, want %v", tt.value, got, tt.want)
		}
	}
}
