package lattice

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is an error answered in Lattice's shape: the status of the
// error's shape in the service model, its name in x-amzn-ErrorType, and
// its members in the body.
type apiError struct {
	status int
	code   string
	body   map[string]any
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %v", e.code, e.body["message"]) }

// FieldError is one member of a ValidationException's fieldList.
type FieldError struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

func invalid(fields ...FieldError) *apiError {
	msg := "Invalid request"
	if len(fields) > 0 {
		msg = fields[0].Name + ": " + fields[0].Message
	}
	return &apiError{http.StatusBadRequest, "ValidationException",
		map[string]any{"message": msg, "reason": "fieldValidationFailed", "fieldList": fields}}
}

func invalidf(field, format string, args ...any) *apiError {
	return invalid(FieldError{Name: field, Message: fmt.Sprintf(format, args...)})
}

func cannotParse(err error) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException",
		map[string]any{"message": "cannot parse the request body: " + err.Error(), "reason": "cannotParse"}}
}

func notFound(typ, id string) *apiError {
	return &apiError{http.StatusNotFound, "ResourceNotFoundException",
		map[string]any{"message": fmt.Sprintf("%s %s not found", typ, id), "resourceId": id, "resourceType": typ}}
}

func conflict(typ, id, format string, args ...any) *apiError {
	return &apiError{http.StatusConflict, "ConflictException",
		map[string]any{"message": fmt.Sprintf(format, args...), "resourceId": id, "resourceType": typ}}
}

func accessDenied(format string, args ...any) *apiError {
	return &apiError{http.StatusForbidden, "AccessDeniedException", map[string]any{"message": fmt.Sprintf(format, args...)}}
}

// quota is ServiceQuotaExceededException, whose status the model says is 402.
func quota(typ string, limit int) *apiError {
	return &apiError{http.StatusPaymentRequired, "ServiceQuotaExceededException", map[string]any{
		"message": fmt.Sprintf("the quota of %d for %s is reached", limit, typ), "resourceType": typ,
		"serviceCode": "vpc-lattice", "quotaCode": typ}}
}

func throttled() *apiError {
	return &apiError{http.StatusTooManyRequests, "ThrottlingException",
		map[string]any{"message": "too many concurrent changes, retry", "serviceCode": "vpc-lattice"}}
}

func internal(err error) *apiError {
	return &apiError{http.StatusInternalServerError, "InternalServerException", map[string]any{"message": err.Error()}}
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"__type": e.code}
	for k, v := range e.body {
		body[k] = v
	}
	w.Header().Set("x-amzn-ErrorType", e.code)
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}
