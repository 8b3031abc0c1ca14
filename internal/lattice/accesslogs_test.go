package lattice

import (
	"net/http"
	"slices"
	"testing"
)

func TestSinkOf(t *testing.T) {
	for _, tc := range []struct{ arn, kind, sink string }{
		{"arn:aws:logs:us-east-1:123456789012:log-group:inventory-logs", "CloudWatchLogs", "inventory-logs"},
		{"arn:aws:logs:us-east-1:123456789012:log-group:inventory-logs:*", "CloudWatchLogs", "inventory-logs"},
		{"arn:aws:s3:::my-bucket.logs", "S3", "my-bucket.logs"},
		{"arn:aws:firehose:us-east-1:123456789012:deliverystream/stream_1", "Firehose", "stream_1"},
	} {
		kind, sink, err := sinkOf(tc.arn)
		if err != nil || kind != tc.kind || sink != tc.sink {
			t.Errorf("sinkOf(%q) = %q, %q, %v; want %q, %q", tc.arn, kind, sink, err, tc.kind, tc.sink)
		}
	}
	for _, arn := range []string{
		"arn:aws:logs:us-east-1:123456789012:log-group:/aws/vpc-lattice/x", // a path: not a file name
		"arn:aws:s3:::../../etc",
		"arn:aws:s3:::bucket/prefix",
		"arn:aws:sqs:us-east-1:123456789012:queue-name",
		"arn:aws:firehose:us-east-1:123456789012:stream/x",
		"not-an-arn-at-all-but-long-enough",
	} {
		if _, _, err := sinkOf(arn); err == nil {
			t.Errorf("sinkOf(%q) accepted", arn)
		} else if ae := err.(*apiError); ae.body["fieldList"].([]FieldError)[0].Name != "destinationArn" {
			t.Errorf("sinkOf(%q): %v, want the field destinationArn", arn, ae.body)
		}
	}
}

// Access log subscriptions of a network and of a service name the
// proxies' sinks in the model; one per destination type and resource; a
// deleted resource takes its subscriptions along.
func TestAccessLogSubscriptions(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net"}`)
	snID := sn["id"].(string)
	status, _, sub := a.do("EAST", "POST", "/accesslogsubscriptions",
		`{"resourceIdentifier":"`+snID+`","destinationArn":"arn:aws:logs:eu-west-1:123456789012:log-group:net-logs"}`)
	if status != 201 || sub["resourceId"] != snID || sub["serviceNetworkLogType"] != "SERVICE" || len(sub["id"].(string)) != 21 {
		t.Fatalf("create: %d %v", status, sub)
	}
	id := sub["id"].(string)
	if status, code, _ := a.do("EAST", "POST", "/accesslogsubscriptions",
		`{"resourceIdentifier":"`+snID+`","destinationArn":"arn:aws:logs:eu-west-1:123456789012:log-group:other"}`); status != 409 || code != "ConflictException" {
		t.Errorf("a second CloudWatch subscription: %d %s", status, code)
	}
	if status, _, _ := a.do("EAST", "POST", "/accesslogsubscriptions",
		`{"resourceIdentifier":"`+snID+`","destinationArn":"arn:aws:s3:::net-bucket"}`); status != 201 {
		t.Errorf("an S3 subscription beside it: %d", status)
	}
	if status, code, _ := a.do("WEST", "POST", "/accesslogsubscriptions",
		`{"resourceIdentifier":"`+snID+`","destinationArn":"arn:aws:s3:::west-bucket"}`); status != 403 || code != "AccessDeniedException" {
		t.Errorf("west subscribing to east's network: %d %s", status, code)
	}
	if got := a.storedNetwork(snID).AccessLogs; len(got) != 2 || !slices.Contains(got, "net-logs") || !slices.Contains(got, "net-bucket") {
		t.Errorf("model network's access logs: %v", got)
	}
	if status, _, u := a.do("EAST", "PATCH", "/accesslogsubscriptions/"+id, `{"destinationArn":"arn:aws:logs:eu-west-1:123456789012:log-group:renamed"}`); status != http.StatusOK || u["destinationArn"] == nil {
		t.Errorf("update: %d %v", status, u)
	}
	if got := a.storedNetwork(snID).AccessLogs; !slices.Contains(got, "renamed") || slices.Contains(got, "net-logs") {
		t.Errorf("after the update: %v", got)
	}
	if status, _, l := a.do("WEST", "GET", "/accesslogsubscriptions?resourceIdentifier="+snID, ""); status != 200 || len(l["items"].([]any)) != 2 {
		t.Errorf("list: %d %v", status, l)
	}
	if status, code, _ := a.do("EAST", "GET", "/accesslogsubscriptions", ""); status != 400 || code != "ValidationException" {
		t.Errorf("list without resourceIdentifier: %d %s", status, code)
	}
	a.do("EAST", "DELETE", "/servicenetworks/"+snID, "")
	if status, code, _ := a.do("EAST", "GET", "/accesslogsubscriptions/"+id, ""); status != 404 || code != "ResourceNotFoundException" {
		t.Errorf("a subscription of a deleted network: %d %s", status, code)
	}
}
