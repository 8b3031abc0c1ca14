package lattice

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

func TestSharedWith(t *testing.T) {
	known := map[string]string{accountID("east"): "east", accountID("west"): "west", accountID("north"): "north"}
	stmt := func(effect, principal, action string) string {
		return fmt.Sprintf(`{"Effect":%q,"Principal":%s,"Action":%s,"Resource":"*"}`, effect, principal, action)
	}
	doc := func(stmts ...string) string {
		return `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
	}
	west, north := accountID("west"), accountID("north")
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"none", "", nil},
		{"an account", doc(stmt("Allow", `{"AWS":"`+west+`"}`, `"vpc-lattice:CreateServiceNetworkServiceAssociation"`)), []string{"west"}},
		{"a root ARN, one statement", `{"Statement":` + stmt("Allow", `{"AWS":["arn:aws:iam::`+north+`:root"]}`, `["vpc-lattice:CreateServiceNetworkVpcAssociation"]`) + `}`, []string{"north"}},
		{"everyone by wildcard action", doc(stmt("Allow", `"*"`, `"vpc-lattice:*"`)), []string{"north", "west"}},
		{"a Deny wins", doc(stmt("Allow", `"*"`, `"*"`), stmt("Deny", `{"AWS":"`+west+`"}`, `"vpc-lattice:Create*"`)), []string{"north"}},
		{"other actions share nothing", doc(stmt("Allow", `"*"`, `"vpc-lattice:GetServiceNetwork"`)), nil},
		{"unknown accounts are nobody", doc(stmt("Allow", `{"AWS":"999999999999"}`, `"*"`)), nil},
		{"a Deny of everyone", doc(stmt("Allow", `{"AWS":"`+west+`"}`, `"*"`), stmt("Deny", `"*"`, `"*"`)), nil},
	} {
		if got := sharedWith(tc.doc, "east", known); !slices.Equal(got, tc.want) {
			t.Errorf("%s: sharedWith = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A network's resource policy shares it: the account it allows may
// associate its own service with the network, whose model object then
// allows that account's cluster; the owner cannot delete the network
// while it is joined; without the policy the association is refused.
func TestResourcePolicySharesANetwork(t *testing.T) {
	a := newTestAPI(t)
	_, _, sn := a.do("EAST", "POST", "/servicenetworks", `{"name":"shared"}`)
	snID, snARN := sn["id"].(string), sn["arn"].(string)
	_, _, svc := a.do("WEST", "POST", "/services", `{"name":"west-svc"}`)
	_, _, tg := a.do("WEST", "POST", "/targetgroups", `{"name":"west-tg","type":"IP","config":{"protocol":"HTTP","port":80}}`)
	a.do("WEST", "POST", "/services/"+svc["id"].(string)+"/listeners",
		fmt.Sprintf(`{"name":"http","protocol":"HTTP","port":80,"defaultAction":{"forward":{"targetGroups":[{"targetGroupIdentifier":%q}]}}}`, tg["id"]))
	assoc := `{"serviceIdentifier":"` + svc["id"].(string) + `","serviceNetworkIdentifier":"` + snARN + `"}`
	if status, code, body := a.do("WEST", "POST", "/servicenetworkserviceassociations", assoc); status != 403 || code != "AccessDeniedException" {
		t.Fatalf("west joins an unshared network: %d %s %v", status, code, body)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + accountID("west") +
		`"},"Action":"vpc-lattice:CreateServiceNetworkServiceAssociation","Resource":"*"}]}`
	body, _ := json.Marshal(map[string]string{"policy": policy})
	if status, _, _ := a.do("EAST", "PUT", "/resourcepolicy/"+snID, string(body)); status != 200 {
		t.Fatalf("put-resource-policy: %d", status)
	}
	if n := a.storedNetwork(snID); !slices.Equal(n.AllowedClusters, []string{"west"}) {
		t.Fatalf("shared network's allowedClusters: %v", n.AllowedClusters)
	}
	status, _, as := a.do("WEST", "POST", "/servicenetworkserviceassociations", assoc)
	if status != 200 || as["createdBy"] != accountID("west") {
		t.Fatalf("west joins the shared network: %d %v", status, as)
	}
	// West's service is in east's network, as west's.
	objs, _, err := a.srv.Store().List(t.Context(), model.KindPrefix(model.KindService))
	if err != nil || len(objs) != 1 || !strings.Contains(string(objs[0].Value), `"owner":"west"`) || !strings.Contains(string(objs[0].Value), `"network":"`+snID+`"`) {
		t.Fatalf("model services: %v %v", objs, err)
	}
	if status, _, got := a.do("EAST", "GET", "/servicenetworkserviceassociations/"+as["id"].(string), ""); status != 200 || got["serviceNetworkName"] != "shared" {
		t.Errorf("get-service-network-service-association: %d %v", status, got)
	}
	if status, code, _ := a.do("EAST", "DELETE", "/servicenetworks/"+snID, ""); status != 409 || code != "ConflictException" {
		t.Errorf("deleting a network another account joined: %d %s", status, code)
	}
	// Unshared: the network allows only east again, and a new association is refused.
	a.do("EAST", "DELETE", "/resourcepolicy/"+snID, "")
	if n := a.storedNetwork(snID); len(n.AllowedClusters) != 0 {
		t.Errorf("unshared network's allowedClusters: %v", n.AllowedClusters)
	}
	a.do("WEST", "DELETE", "/servicenetworkserviceassociations/"+as["id"].(string), "")
	if status, code, _ := a.do("WEST", "POST", "/servicenetworkserviceassociations", assoc); status != 403 || code != "AccessDeniedException" {
		t.Errorf("west joins after the unsharing: %d %s", status, code)
	}
	if status, _, _ := a.do("EAST", "DELETE", "/servicenetworks/"+snID, ""); status != 204 {
		t.Errorf("deleting the network once nobody joins it: %d", status)
	}
}
