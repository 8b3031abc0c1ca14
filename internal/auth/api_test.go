package auth

import "fmt"

// The exported API other packages are written against; a change to a
// signature fails to compile here.
var (
	_ func([]byte) (*Policy, error)           = Parse
	_ func(*Policy, *Request) (Decision, int) = (*Policy).Evaluate
	_ func(*Policy, *Policy, *Request) Result = Authorize
	_ func(Result, *Request) string           = Result.Message
	_ error                                   = (*Error)(nil)
	_ error                                   = Errors(nil)
	_ fmt.Stringer                            = Decision(0)
	_ [3]Decision                             = [...]Decision{ImplicitDeny, Allow, ExplicitDeny}
	_ [6]string                               = [...]string{ActionInvoke, ActionConnect, PrincipalAnonymous, PrincipalWorkload, LevelNetwork, LevelService}
)
