package lattice

import "time"

// The JSON shapes of the Lattice API that are also kept in the records
// (actions, matches, target-group configuration), named as in botocore's
// vpc-lattice service model.

// RuleAction is a rule's or a listener's default action: exactly one
// member.
type RuleAction struct {
	Forward       *ForwardAction       `json:"forward,omitempty"`
	FixedResponse *FixedResponseAction `json:"fixedResponse,omitempty"`
}

// ForwardAction splits requests among target groups by weight.
type ForwardAction struct {
	TargetGroups []WeightedTargetGroup `json:"targetGroups"`
}

// WeightedTargetGroup is one target group of a forward action.
type WeightedTargetGroup struct {
	TargetGroupIdentifier string `json:"targetGroupIdentifier"`
	Weight                *int32 `json:"weight,omitempty"`
}

// FixedResponseAction answers with a status code.
type FixedResponseAction struct {
	StatusCode int `json:"statusCode"`
}

// RuleMatch is a rule's match; httpMatch is its only member.
type RuleMatch struct {
	HTTPMatch *HTTPMatch `json:"httpMatch,omitempty"`
}

// HTTPMatch matches method, path and headers; every one set must hold.
type HTTPMatch struct {
	Method        string        `json:"method,omitempty"`
	PathMatch     *PathMatch    `json:"pathMatch,omitempty"`
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
}

// PathMatch matches the path exactly or by prefix.
type PathMatch struct {
	Match         PathMatchType `json:"match"`
	CaseSensitive *bool         `json:"caseSensitive,omitempty"`
}

// PathMatchType is exact or prefix.
type PathMatchType struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// HeaderMatch matches one header.
type HeaderMatch struct {
	Name          string          `json:"name"`
	Match         HeaderMatchType `json:"match"`
	CaseSensitive *bool           `json:"caseSensitive,omitempty"`
}

// HeaderMatchType is exact, prefix or contains.
type HeaderMatchType struct {
	Exact    string `json:"exact,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	Contains string `json:"contains,omitempty"`
}

// kind names the one of m's fields that is set and gives its value; n is
// how many are set (an empty value counts as unset, as Lattice requires
// 1-200 characters).
func (m HeaderMatchType) kind() (kind, value string, n int) {
	for _, f := range []struct{ kind, value string }{{"exact", m.Exact}, {"prefix", m.Prefix}, {"contains", m.Contains}} {
		if f.value != "" {
			kind, value = f.kind, f.value
			n++
		}
	}
	return kind, value, n
}

// TargetGroupConfig is a target group's configuration.
type TargetGroupConfig struct {
	Port                        *int32             `json:"port,omitempty"`
	Protocol                    string             `json:"protocol,omitempty"`
	ProtocolVersion             string             `json:"protocolVersion,omitempty"`
	IPAddressType               string             `json:"ipAddressType,omitempty"`
	VPCIdentifier               string             `json:"vpcIdentifier,omitempty"`
	HealthCheck                 *HealthCheckConfig `json:"healthCheck,omitempty"`
	LambdaEventStructureVersion string             `json:"lambdaEventStructureVersion,omitempty"`
}

// HealthCheckConfig configures a target group's health checks.
type HealthCheckConfig struct {
	Enabled                    *bool    `json:"enabled,omitempty"`
	Protocol                   string   `json:"protocol,omitempty"`
	ProtocolVersion            string   `json:"protocolVersion,omitempty"`
	Port                       *int32   `json:"port,omitempty"`
	Path                       string   `json:"path,omitempty"`
	HealthCheckIntervalSeconds *int32   `json:"healthCheckIntervalSeconds,omitempty"`
	HealthCheckTimeoutSeconds  *int32   `json:"healthCheckTimeoutSeconds,omitempty"`
	HealthyThresholdCount      *int32   `json:"healthyThresholdCount,omitempty"`
	UnhealthyThresholdCount    *int32   `json:"unhealthyThresholdCount,omitempty"`
	Matcher                    *Matcher `json:"matcher,omitempty"`
}

// Matcher is the healthy status codes.
type Matcher struct {
	HTTPCode string `json:"httpCode,omitempty"`
}

// Target is one target of a target group.
type Target struct {
	ID   string `json:"id"`
	Port *int32 `json:"port,omitempty"`
}

// DNSEntry is a service's generated name.
type DNSEntry struct {
	DomainName   string `json:"domainName,omitempty"`
	HostedZoneID string `json:"hostedZoneId,omitempty"`
}

// account is one owner's Lattice records: one stored document, so that
// a change to them is one conditional write.
type account struct {
	Owner        string                  `json:"owner"`
	Networks     map[string]*network     `json:"networks,omitempty"`
	Services     map[string]*service     `json:"services,omitempty"`
	TargetGroups map[string]*targetGroup `json:"targetGroups,omitempty"`
	Associations map[string]*association `json:"associations,omitempty"`
	// VPCAssociations are the clusters allowed to join networks.
	VPCAssociations map[string]*vpcAssociation `json:"vpcAssociations,omitempty"`
	// AccessLogs are the access log subscriptions of networks and services.
	AccessLogs map[string]*accessLogSub `json:"accessLogs,omitempty"`
	// Tokens are the client tokens of creates, by operation and token.
	Tokens map[string]*idempotency `json:"tokens,omitempty"`
}

type idempotency struct {
	// Request is the hash of the create's body.
	Request string    `json:"request"`
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
}

type network struct {
	meta
	guarded
	Region string `json:"region"`
}

type policy struct {
	Document  string    `json:"document"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

type service struct {
	meta
	guarded
	Region    string               `json:"region"`
	DNS       string               `json:"dns"`
	Listeners map[string]*listener `json:"listeners,omitempty"`
	// CustomDomain is the further name the service answers to.
	CustomDomain string `json:"customDomainName,omitempty"`
	// CertificateARN names the model Certificate its HTTPS listeners
	// serve (certificateName).
	CertificateARN string `json:"certificateArn,omitempty"`
}

type listener struct {
	meta
	Protocol      string           `json:"protocol"`
	Port          int32            `json:"port"`
	DefaultAction RuleAction       `json:"defaultAction"`
	Rules         map[string]*rule `json:"rules,omitempty"`
}

type rule struct {
	meta
	Priority int32      `json:"priority"`
	Match    RuleMatch  `json:"match"`
	Action   RuleAction `json:"action"`
}

type targetGroup struct {
	meta
	Type    string            `json:"type"`
	Config  TargetGroupConfig `json:"config"`
	Targets []Target          `json:"targets,omitempty"`
	// Draining are deregistered targets until their draining time ends.
	Draining []drainingTarget `json:"draining,omitempty"`
}

// drainingTarget is a deregistered target, draining until Until.
type drainingTarget struct {
	Target
	Until time.Time `json:"until"`
}

// association has no name and is never updated: both stay zero.
type association struct {
	meta
	NetworkID string `json:"networkId"`
	ServiceID string `json:"serviceId"`
	// NetworkOwner is the owner of a network another owner shared.
	NetworkOwner string `json:"networkOwner,omitempty"`
}
