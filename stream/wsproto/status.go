package wsproto

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Status is the Kubernetes metav1.Status object: the final message on the
// error channel of v4 and v5, and the body of every refused request. Field
// names and order follow apimachinery; a cause's type is the JSON key
// "reason".
type Status struct {
	Kind       string         `json:"kind,omitempty"`
	APIVersion string         `json:"apiVersion,omitempty"`
	Metadata   struct{}       `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Details    *StatusDetails `json:"details,omitempty"`
	Code       int32          `json:"code,omitempty"`
}

// StatusDetails names the object a Status is about, and its causes.
type StatusDetails struct {
	Name              string        `json:"name,omitempty"`
	Kind              string        `json:"kind,omitempty"`
	Causes            []StatusCause `json:"causes,omitempty"`
	RetryAfterSeconds int32         `json:"retryAfterSeconds,omitempty"`
}

// StatusCause is one cause of a failure.
type StatusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Field   string `json:"field,omitempty"`
}

// Status values and the reasons used on the error channel.
const (
	StatusSuccess = "Success"
	StatusFailure = "Failure"

	ReasonNonZeroExitCode = "NonZeroExitCode"
	ReasonInternalError   = "InternalError"
	CauseExitCode         = "ExitCode"
)

// Success is the Status of a command that exited with code 0:
// {"metadata":{},"status":"Success"}.
func Success() Status { return Status{Status: StatusSuccess} }

// ExitCode is the Status of a command that exited with a non-zero code, as
// the kubelet writes it. client-go reads the code from the ExitCode cause.
func ExitCode(code int, command []string) Status {
	return Status{
		Status:  StatusFailure,
		Message: fmt.Sprintf("command terminated with non-zero exit code: error executing command %v, exit code %d", command, code),
		Reason:  ReasonNonZeroExitCode,
		Details: &StatusDetails{Causes: []StatusCause{{Type: CauseExitCode, Message: strconv.Itoa(code)}}},
	}
}

// InternalError is the Status of a failure that is not the command's own.
func InternalError(err error) Status {
	return Status{
		Status:  StatusFailure,
		Message: "Internal error occurred: " + err.Error(),
		Reason:  ReasonInternalError,
		Details: &StatusDetails{Causes: []StatusCause{{Message: err.Error()}}},
		Code:    500,
	}
}

// StatusPayload is the error-channel payload that reports st: the JSON
// Status on v4 and v5; before v4, nothing on success and the message as
// plain text on failure. A nil result means nothing is sent.
func (p Protocol) StatusPayload(st Status) []byte {
	if p.Status {
		b, err := json.Marshal(st)
		if err != nil { // cannot happen: Status has only strings and numbers
			panic(err)
		}
		return b
	}
	if st.Status == StatusSuccess {
		return nil
	}
	return []byte(st.Message)
}
