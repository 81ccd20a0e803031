package wsproto

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestStatusPayload(t *testing.T) {
	tests := []struct {
		name  string
		proto Protocol
		st    Status
		want  string
	}{
		{"v5 success", V5, Success(), `{"metadata":{},"status":"Success"}`},
		{"v4 exit 3", V4, ExitCode(3, []string{"sh", "-c", "exit 3"}),
			`{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`},
		{"v4 internal", V4Base64, InternalError(errors.New("boom")),
			`{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}`},
		{"v1 success sends nothing", V1, Success(), ``},
		{"v1 failure is text", Unversioned, ExitCode(7, []string{"false"}),
			`command terminated with non-zero exit code: error executing command [false], exit code 7`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.proto.StatusPayload(tc.st)); got != tc.want {
				t.Errorf("StatusPayload =\n %s\nwant\n %s", got, tc.want)
			}
		})
	}
}

// TestStatusFieldNames decodes our Status with the field names of
// apimachinery's metav1.Status, spelled out here, as client-go would.
func TestStatusFieldNames(t *testing.T) {
	var st struct {
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Details struct {
			Causes []struct {
				Type    string `json:"reason"`
				Message string `json:"message"`
			} `json:"causes"`
		} `json:"details"`
	}
	if err := json.Unmarshal(V5.StatusPayload(ExitCode(42, nil)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "Failure" || st.Reason != "NonZeroExitCode" || len(st.Details.Causes) != 1 ||
		st.Details.Causes[0].Type != "ExitCode" || st.Details.Causes[0].Message != "42" {
		t.Errorf("decoded %+v", st)
	}
}
