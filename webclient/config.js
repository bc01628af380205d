// Deployment settings of the web client, served as is (edit this file to deploy).
//
// profileUrl: base URL of the profile service (webchat-profile), which the browser calls
// directly for names, status lines and avatars. The default is the page's host on port
// 4040 (the profile service's default port). '' means the page's own origin (a reverse
// proxy routing /api/v1/profiles to the profile service). The origin must also be allowed
// by connect-src in index.html's Content-Security-Policy and in the one webchat sends as a
// header (it adds the origin of WEBCHAT_PROFILE_URL), and the profile service must be
// started with WEBCHAT_CORS_ORIGINS naming the chat server's origin. When the service
// cannot be reached, names fall back to the ones given at sign-up (GET /api/v1/users).
export default {
  profileUrl: `${location.protocol}//${location.hostname}:4040`,
};
