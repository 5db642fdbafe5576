package org.caremesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.nio.charset.StandardCharsets;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseOperationOutcome;

/**
 * HAPI's instance validator, offline (the core profiles and value sets shipped in
 * hapi-fhir-validation-resources, in-memory terminology): every request body is validated by
 * RequestValidatingInterceptor, which refuses errors with 422 and an OperationOutcome, except
 * the body of $validate, which gets the OperationOutcome as its answer.
 */
@Interceptor
public final class Validation {
  private final FhirValidator validator;
  private final RequestValidatingInterceptor requests = new RequestValidatingInterceptor();

  Validation(FhirContext ctx) {
    ValidationSupportChain support =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            new CommonCodeSystemsTerminologyService(ctx),
            new SnapshotGeneratingValidationSupport(ctx));
    FhirInstanceValidator module = new FhirInstanceValidator(support);
    validator = ctx.newValidator().registerValidatorModule(module);
    requests.addValidatorModule(module);
    requests.setFailOnSeverity(ResultSeverityEnum.ERROR);
    requests.setAddResponseHeaderOnSeverity(null);
  }

  /** Validate a small resource once, so that the first request does not load the profiles. */
  void warmUp(String resourceJson) {
    validator.validateWithResult(resourceJson);
  }

  @Hook(Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED)
  public boolean incoming(RequestDetails request, HttpServletRequest http, HttpServletResponse response) {
    if ("$validate".equals(request.getOperation())) {
      return true;
    }
    return requests.incomingRequestPostProcessed(request, http, response);
  }

  /** The OperationOutcome of HAPI's validator for the request's body. */
  IBaseOperationOutcome validate(RequestDetails request) {
    String body = new String(request.loadRequestContents(), StandardCharsets.UTF_8);
    return validator.validateWithResult(body).toOperationOutcome();
  }
}
