// Package auth is Trellis's auth-policy language and its evaluator.
//
// A policy is a JSON document in the IAM policy grammar, as Amazon VPC
// Lattice auth policies are:
//
//	{"Version": "2012-10-17",
//	 "Statement": [{
//	   "Sid": "ReadOnly",
//	   "Effect": "Allow",
//	   "Principal": "*",
//	   "Action": "trellis:Invoke",
//	   "Resource": "inventory-default.my-hotel/api/*",
//	   "Condition": {"StringEquals": {"trellis:RequestMethod": ["GET", "HEAD"]}}}]}
//
// [Parse] validates and compiles a document into a [Policy];
// [Policy.Evaluate] judges one [Request] against one policy, and [Authorize]
// combines the two levels Lattice has, the service network's policy and the
// service's policy.
//
// # Document
//
// The top level has Version (optional; "2012-10-17" when present), Id
// (optional string, no effect) and Statement: one statement object or a
// non-empty array of them. A statement has Sid (optional, unique within the
// document), Effect ("Allow" or "Deny"), Principal, Action, Resource and
// an optional Condition. Element names are case-sensitive, every unknown or
// repeated member is an error, and NotPrincipal, NotAction and NotResource
// are refused. Documents are at most 64 KiB.
//
// Principal is "*", everyone including anonymous callers, or
// {"Trellis": patterns}: principal IDs matched with the globs below. An
// anonymous caller (Principal.Type is PrincipalAnonymous, or the ID is
// empty) never matches a Trellis principal, not even {"Trellis": "*"}.
//
// Action lists "trellis:Invoke" (HTTP, HTTPS and gRPC requests),
// "trellis:Connect" (TCP connections to TLS-passthrough services),
// "trellis:*" or "*"; the Lattice names "vpc-lattice-svcs:Invoke",
// "vpc-lattice-svcs:Connect" and "vpc-lattice-svcs:*" are aliases. As in
// IAM, action names are compared case-insensitively.
//
// Resource lists globs matched against the request's resource: the service
// name followed by the path for Invoke ("inventory-default.my-hotel/api/items",
// or ".../pkg.Service/Method" for gRPC), the bare service name for Connect.
//
// Globs, in principals, resources and StringLike values, are case-sensitive;
// "*" matches any run of characters, "/" included, and "?" exactly one
// character (a UTF-8 sequence). There is no escape, and IAM policy variables
// ("${...}", including the "${*}" escapes) are refused wherever a pattern or
// a string condition value may appear, so that a document written for IAM
// substitution is not silently matched literally.
//
// # Conditions
//
// Condition maps operators to {key: values}. All operators of a block and
// all keys under one operator must hold; a key holds when its request value
// matches any of the listed values. The operators are StringEquals,
// StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase,
// StringLike, StringNotLike, NumericEquals, NumericNotEquals,
// NumericLessThan, NumericLessThanEquals, NumericGreaterThan,
// NumericGreaterThanEquals, Bool, IpAddress, NotIpAddress and Null, each but
// Null optionally prefixed with "ForAnyValue:" or "ForAllValues:" and
// suffixed with "IfExists". Operator names are case-sensitive. An operator
// must name at least one key; an empty Condition object is allowed and
// means no condition.
//
// The keys, with their Lattice and IAM aliases, are:
//
//	trellis:Port                         numeric  vpc-lattice-svcs:Port
//	trellis:RequestMethod                string   vpc-lattice-svcs:RequestMethod
//	trellis:RequestPath                  string   vpc-lattice-svcs:RequestPath
//	trellis:RequestHeader/<name>         strings  vpc-lattice-svcs:RequestHeader/<name>
//	trellis:RequestQueryString/<key>     strings  vpc-lattice-svcs:RequestQueryString/<key>
//	trellis:ServiceNetwork               string   vpc-lattice-svcs:ServiceNetworkArn
//	trellis:Service                      string   vpc-lattice-svcs:ServiceArn
//	trellis:SourceCluster                string   vpc-lattice-svcs:SourceVpc
//	trellis:SourceIp                     IP       aws:SourceIp
//	trellis:PrincipalType                string   aws:PrincipalType
//	trellis:Principal                    string
//
// Key names are case-sensitive; header names in keys are looked up
// case-insensitively (by Request.Header), query keys case-sensitively.
// Operators are typed: the String operators and Bool take string keys, the
// Numeric operators trellis:Port, IpAddress and NotIpAddress
// trellis:SourceIp, and Null any key; any other pairing is a parse error.
//
// Values are strings, numbers or booleans, alone or in a non-empty array.
// String operators compare a number or boolean by its JSON text. Numeric
// operators take JSON numbers or strings holding one (decimal, optionally
// with fraction and exponent). Bool and Null take true, false, "true" or
// "false" (case-insensitively); Bool matches a request value that spells the
// same boolean, ignoring case. IpAddress takes CIDR prefixes or single
// addresses, IPv4 or IPv6; an IPv4-mapped IPv6 source address is judged as
// its IPv4 address.
//
// A key is missing from a request when it has no value: an empty string
// (for example the method of a Connect, the ID of an anonymous principal),
// a zero Port, an invalid SourceIP, or a header or query parameter for which
// Request.Header or Request.Query returns no values (a header present with
// an empty value is not missing). For a missing key:
//
//   - a positive operator is false and a negated one (StringNotEquals,
//     StringNotEqualsIgnoreCase, StringNotLike, NumericNotEquals,
//     NotIpAddress) is true;
//   - any operator suffixed with IfExists is true;
//   - Null with "true" is true, with "false" false;
//   - ForAllValues: is true and ForAnyValue: false.
//
// For a present key, with one or several values:
//
//   - without a set prefix, a positive operator holds when any request value
//     matches any listed value, and a negated operator is its exact
//     complement: it holds when no request value matches any listed value;
//   - ForAnyValue: holds when at least one request value passes, and
//     ForAllValues: when every request value passes, where a value passes a
//     positive operator if it matches any listed value and a negated
//     operator if it matches none.
//
// Single-valued keys behave as sets of one under the set prefixes.
//
// # Evaluation
//
// A statement applies when its Principal, Action, Resource and Condition
// all match. In one policy an applying Deny is an explicit deny, otherwise
// an applying Allow allows, otherwise the request is implicitly denied.
// [Authorize] skips a level whose policy is nil (auth off); an explicit deny
// at either level refuses the request, and every level that is on must
// allow it.
package auth
