package api

import (
	"net/http"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gateway/internal/reqerr"
)

// Who the caller is and what it may do, for kubectl auth whoami and
// kubectl auth can-i (and the tools that ask before they show an
// action): the gateway's token is its one identity, allowed everything
// the gateway serves.

// kubeUser is the identity the token stands for.
var kubeUser = authnv1.UserInfo{Username: "gateway", Groups: []string{"system:authenticated"}}

// authGroups are the API groups the gateway serves, for discovery.
var authGroups = []struct {
	group     string
	resources []metav1.APIResource
}{
	{"authentication.k8s.io", []metav1.APIResource{
		{Name: "selfsubjectreviews", Kind: "SelfSubjectReview", Verbs: []string{"create"}},
	}},
	{"authorization.k8s.io", []metav1.APIResource{
		{Name: "selfsubjectaccessreviews", Kind: "SelfSubjectAccessReview", Verbs: []string{"create"}},
		{Name: "selfsubjectrulesreviews", Kind: "SelfSubjectRulesReview", Verbs: []string{"create"}},
	}},
}

func (a *API) authRoutes(route func(method, path string, h http.HandlerFunc)) {
	auth := a.authenticated
	for _, g := range authGroups {
		route("GET", "/apis/"+g.group+"/v1", auth(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
				GroupVersion: g.group + "/v1", APIResources: g.resources})
		}))
	}
	route("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", auth(a.selfSubjectReview))
	route("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", auth(a.selfSubjectAccessReview))
	route("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", auth(a.selfSubjectRulesReview))
}

func apiGroupList() metav1.APIGroupList {
	l := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
	for _, g := range authGroups {
		v := metav1.GroupVersionForDiscovery{GroupVersion: g.group + "/v1", Version: "v1"}
		l.Groups = append(l.Groups, metav1.APIGroup{Name: g.group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
	}
	return l
}

func (a *API) selfSubjectReview(w http.ResponseWriter, r *http.Request) {
	var rev authnv1.SelfSubjectReview
	if err := decodeKube(w, r, &rev, "authentication.k8s.io", "SelfSubjectReview"); err != nil {
		a.writeError(w, r, err)
		return
	}
	rev.Status.UserInfo = kubeUser
	writeJSON(w, http.StatusCreated, rev)
}

func (a *API) selfSubjectAccessReview(w http.ResponseWriter, r *http.Request) {
	var rev authzv1.SelfSubjectAccessReview
	if err := decodeKube(w, r, &rev, "authorization.k8s.io", "SelfSubjectAccessReview"); err != nil {
		a.writeError(w, r, err)
		return
	}
	if (rev.Spec.ResourceAttributes == nil) == (rev.Spec.NonResourceAttributes == nil) {
		a.writeError(w, r, reqerr.New(reqerr.ErrInvalid, "SelfSubjectAccessReview: exactly one of spec.resourceAttributes and spec.nonResourceAttributes is required"))
		return
	}
	rev.Status = authzv1.SubjectAccessReviewStatus{Allowed: true, Reason: "the gateway's token may do everything the gateway serves"}
	writeJSON(w, http.StatusCreated, rev)
}

func (a *API) selfSubjectRulesReview(w http.ResponseWriter, r *http.Request) {
	var rev authzv1.SelfSubjectRulesReview
	if err := decodeKube(w, r, &rev, "authorization.k8s.io", "SelfSubjectRulesReview"); err != nil {
		a.writeError(w, r, err)
		return
	}
	rev.Status = authzv1.SubjectRulesReviewStatus{
		ResourceRules:    []authzv1.ResourceRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
		NonResourceRules: []authzv1.NonResourceRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
	}
	writeJSON(w, http.StatusCreated, rev)
}
