package lattice

import (
	"net/http"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// westJoins has cluster west put a service into network id through the
// server's own write path, as its controller would.
func westJoins(a *testAPI, network string) error {
	svc := &model.Service{
		Meta:      model.Meta{Name: "west-svc", Owner: "west"},
		Network:   network,
		Listeners: []model.Listener{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}},
		Rules:     []model.Rule{{Name: "all", Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 404}}}},
	}
	_, err := a.srv.Commit(a.t.Context(), "west", []model.Object{svc}, nil, nil)
	return err
}

func TestVPCAssociationAllowsTheCluster(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net"}`)
	id := sn["id"].(string)

	// Before the association west may not join east's network.
	if err := westJoins(a, id); err == nil {
		t.Fatal("west joined a network that allows only east")
	}
	// Only the network's owner associates a VPC with it.
	body := `{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-west"}`
	if status, code, _ := a.do("WEST", "POST", "/servicenetworkvpcassociations", body); status != 403 || code != "AccessDeniedException" {
		t.Errorf("west associates with east's network: %d %s", status, code)
	}
	status, _, va := a.do("EAST", "POST", "/servicenetworkvpcassociations", body)
	if status != 200 || va["status"] != "ACTIVE" || !strings.HasPrefix(va["id"].(string), "snva-") || len(va["id"].(string)) != 22 ||
		!strings.Contains(va["arn"].(string), ":servicenetworkvpcassociation/snva-") || va["createdBy"] != accountID("east") {
		t.Fatalf("create: %d %v", status, va)
	}
	vid := va["id"].(string)
	// The model network now allows west, and west's service joins it.
	if n := a.storedNetwork(id); len(n.AllowedClusters) != 1 || n.AllowedClusters[0] != "west" {
		t.Fatalf("model allowedClusters %v", n.AllowedClusters)
	}
	if err := westJoins(a, id); err != nil {
		t.Fatalf("west joins after the association: %v", err)
	}
	// The same VPC again: ConflictException.
	if status, code, _ := a.do("EAST", "POST", "/servicenetworkvpcassociations", body); status != 409 || code != "ConflictException" {
		t.Errorf("second association: %d %s", status, code)
	}
	// Get (by ID and by ARN) and List with its filters.
	for _, ident := range []string{vid, strings.ReplaceAll(va["arn"].(string), "/", "%2F")} {
		status, _, got := a.do("WEST", "GET", "/servicenetworkvpcassociations/"+ident, "")
		if status != 200 || got["vpcId"] != "vpc-west" || got["serviceNetworkId"] != id || got["serviceNetworkName"] != "net" || got["status"] != "ACTIVE" {
			t.Errorf("get %s: %d %v", ident, status, got)
		}
	}
	for q, want := range map[string]int{"": 1, "?vpcIdentifier=vpc-west": 1, "?vpcIdentifier=vpc-north": 0,
		"?serviceNetworkIdentifier=" + id: 1, "?serviceNetworkIdentifier=sn-00000000000000000": 0} {
		status, _, l := a.do("EAST", "GET", "/servicenetworkvpcassociations"+q, "")
		if items, _ := l["items"].([]any); status != 200 || len(items) != want {
			t.Errorf("list%s: %d %v, want %d items", q, status, l, want)
		}
	}
	// The network cannot go while a VPC is associated.
	if status, code, _ := a.do("EAST", "DELETE", "/servicenetworks/"+id, ""); status != 409 || code != "ConflictException" {
		t.Errorf("delete associated network: %d %s", status, code)
	}
	// Only the owner deletes the association.
	if status, code, _ := a.do("WEST", "DELETE", "/servicenetworkvpcassociations/"+vid, ""); status != 403 || code != "AccessDeniedException" {
		t.Errorf("west deletes: %d %s", status, code)
	}
	if status, _, del := a.do("EAST", "DELETE", "/servicenetworkvpcassociations/"+vid, ""); status != 200 || del["status"] != "DELETE_IN_PROGRESS" {
		t.Errorf("delete: %d %v", status, del)
	}
	if status, code, _ := a.do("EAST", "GET", "/servicenetworkvpcassociations/"+vid, ""); status != 404 || code != "ResourceNotFoundException" {
		t.Errorf("get deleted: %d %s", status, code)
	}
	if n := a.storedNetwork(id); len(n.AllowedClusters) != 0 {
		t.Errorf("model allowedClusters after delete %v", n.AllowedClusters)
	}
	// West's service stays, but west can no longer write it there.
	if _, err := a.srv.Store().Get(t.Context(), model.Key(model.KindService, "west-svc")); err != nil {
		t.Errorf("west's service after the association went: %v", err)
	}
	if err := westJoins(a, id); err == nil {
		t.Error("west rewrote its service in a network no longer associated with it")
	}
}

func TestVPCAssociationValidation(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"net"}`)
	id := sn["id"].(string)
	for _, tc := range []struct{ body, field string }{
		{`{"vpcIdentifier":"vpc-west"}`, "serviceNetworkIdentifier"},
		{`{"serviceNetworkIdentifier":"` + id + `"}`, "vpcIdentifier"},
		{`{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"west"}`, "vpcIdentifier"},
		{`{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-West_1"}`, "vpcIdentifier"},
		{`{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-"}`, "vpcIdentifier"},
		{`{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-west","securityGroupIds":["sg-1"]}`, "securityGroupIds[0]"},
		{`{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-west","dnsOptions":{"privateDnsPreference":"ALL_DOMAINS"}}`, "dnsOptions"},
	} {
		status, code, body := a.do("EAST", "POST", "/servicenetworkvpcassociations", tc.body)
		fl, _ := body["fieldList"].([]any)
		if status != 400 || code != "ValidationException" || len(fl) == 0 || fl[0].(map[string]any)["name"] != tc.field {
			t.Errorf("%s: %d %s %v, want the field %s", tc.body, status, code, body, tc.field)
		}
	}
	if status, code, _ := a.do("EAST", "POST", "/servicenetworkvpcassociations",
		`{"serviceNetworkIdentifier":"sn-00000000000000000","vpcIdentifier":"vpc-west"}`); status != 404 || code != "ResourceNotFoundException" {
		t.Errorf("unknown network: %d %s", status, code)
	}
	// Associating the owner's own cluster is allowed and adds nothing
	// to allowedClusters (the owner always is); a client token makes it once.
	body := `{"serviceNetworkIdentifier":"` + id + `","vpcIdentifier":"vpc-east","securityGroupIds":["sg-0123abcd"],"privateDnsEnabled":true,"clientToken":"t1"}`
	status, _, first := a.do("EAST", "POST", "/servicenetworkvpcassociations", body)
	if status != 200 || first["privateDnsEnabled"] != true || len(first["securityGroupIds"].([]any)) != 1 {
		t.Fatalf("own cluster: %d %v", status, first)
	}
	if status, _, again := a.do("EAST", "POST", "/servicenetworkvpcassociations", body); status != http.StatusOK || again["id"] != first["id"] {
		t.Errorf("retry with the client token: %d %v, want %v", status, again["id"], first["id"])
	}
	kv, err := a.srv.Store().Get(t.Context(), model.Key(model.KindServiceNetwork, id))
	if err != nil || strings.Contains(string(kv.Value), "allowedClusters") {
		t.Errorf("own cluster in allowedClusters: %v %s", err, kv.Value)
	}
}
